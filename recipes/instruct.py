"""Instruction tuning: GSM8K or code infilling, for a FlexMDM or the LLaDA MDM baseline (same pipeline).

    accelerate launch --config_file recipes/accelerate/zero3_1x8.yaml recipes/instruct.py \
        --config recipes/configs/instruct_gsm8k_8b.yaml
    python recipes/instruct.py --config recipes/configs/tiny_instruct_gsm8k_cpu.yaml model.kind=mdm

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
    validate_config,
)


def main(argv=None) -> None:
    config = parse_recipe_args(__doc__.splitlines()[0], argv)
    if config.data.format == "corpus":
        raise ConfigError(
            "instruct.py tunes on instruction data (gsm8k, infill, prompt_completion); use retrofit_llada.py."
        )

    accelerator = build_accelerator(config)
    validate_config(config, accelerator.num_processes)  # data files, length limit, batch layout

    tokenizer = build_tokenizer(config.model)
    # the retrofit FlexMDM, or LLaDA for the baseline
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
