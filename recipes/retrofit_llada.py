"""Retrofit LLaDA into a FlexMDM (transfer learning on a text corpus).

    accelerate launch --config_file recipes/accelerate/zero3_2x8.yaml recipes/retrofit_llada.py \
        --config recipes/configs/retrofit_llada_8b.yaml
    python recipes/retrofit_llada.py --config recipes/configs/tiny_retrofit_cpu.yaml train.max_steps=4

Top to bottom: read the config, check it, build the pieces, train, export. Every knob is in the YAML.
"""

from flexretrofit.training import (
    ConfigError,
    Trainer,
    build_accelerator,
    build_datasets,
    build_model,
    build_tokenizer,
    parse_recipe_args,
    run_recipe,
    training_method,
    validate_config,
)


def main(argv=None) -> None:
    config = parse_recipe_args(__doc__.splitlines()[0], argv)
    # The retrofit adds the new modules of a FlexMDM to LLaDA and trains them on a corpus.
    if not training_method(config.model.kind).new_modules or config.data.format != "corpus":
        raise ConfigError(
            "the retrofit recipe trains model.kind=flexmdm on data.format=corpus; use instruct.py otherwise."
        )

    accelerator = build_accelerator(config)
    validate_config(config, accelerator.num_processes)  # data files, length limit, batch layout

    tokenizer = build_tokenizer(config.model)
    # FlexMDM.from_llada + LoRA / checkpointing
    model = build_model(config.model, config.lora, seed=config.train.seed)
    with accelerator.main_process_first():  # tokenise once, the other ranks read the cache
        train_set, eval_set = build_datasets(config, tokenizer)

    trainer = Trainer(config, accelerator, model, train_set, eval_set, tokenizer)
    trainer.train()
    if trainer.step == config.train.max_steps:
        trainer.export()
    accelerator.end_training()


if __name__ == "__main__":
    raise SystemExit(run_recipe(main))  # a config mistake: one line on stderr, exit 2
