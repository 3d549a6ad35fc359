"""Loading the LLaDA tokenizer with the roles this project relies on (mask, eos = pad, chat template)."""

from __future__ import annotations

import os

from transformers import AutoTokenizer, PreTrainedTokenizerBase

MASK_TOKEN = "<|mdm_mask|>"
HEADER_START, HEADER_END, END_OF_TURN = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"

# Llama-3 style turns as LLaDA-Instruct uses them. Unlike the published template, the assistant
# header is appended only when add_generation_prompt is true.
CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# For vocabularies without the header tokens (tiny test tokenizers built without them).
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] | trim }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids an answer ends at: EOS, and ``<|eot_id|>`` when the vocabulary has it (instruct models end
    their turn with it). What the MDM sampler cuts its response at (``MDMGenerationConfig.eos_token_id``)."""
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    end_of_turn = tokenizer.get_vocab().get(END_OF_TURN)
    return sorted({*ids, end_of_turn} - {None})


class TokenizerLoadError(ValueError):
    """No usable tokenizer at a path. The message names the path and the cause; callers add what to do."""


def load_tokenizer(path: str | os.PathLike, **kwargs) -> PreTrainedTokenizerBase:
    """Load a LLaDA(-style) fast tokenizer from a hub id or folder and complete its special-token roles.

    - ``mask_token`` is set to ``<|mdm_mask|>`` when the files do not set it (the published ones do not);
    - ``pad_token`` falls back to ``eos_token`` (LLaDA uses pad == eos);
    - the chat template is replaced by one that honours ``add_generation_prompt``.

    Raises:
        TokenizerLoadError: no tokenizer files (locally or on the hub), unreadable or malformed ones, or a
            vocabulary without a mask token.
    """
    try:
        return prepare_tokenizer(AutoTokenizer.from_pretrained(path, **kwargs))
    except (OSError, ValueError, KeyError) as error:  # a malformed tokenizer.json raises KeyError
        detail = " ".join(str(error).split())[:200]
        raise TokenizerLoadError(
            f"could not load a tokenizer from {path} ({type(error).__name__}: {detail})"
        ) from error


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give ``tokenizer`` the mask/pad roles and chat template described in :func:`load_tokenizer` (in place)."""
    vocab = tokenizer.get_vocab()
    if tokenizer.mask_token is None:
        if MASK_TOKEN not in vocab:
            raise ValueError(
                f"tokenizer has no mask token and no {MASK_TOKEN!r} in its vocabulary; a masked diffusion model "
                f"needs one: add it (tokenizer.add_special_tokens({{'mask_token': {MASK_TOKEN!r}}})) and resize "
                "the model's embeddings, or load the LLaDA tokenizer."
            )
        tokenizer.mask_token = MASK_TOKEN
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad token nor an eos token; set one of them.")
        tokenizer.pad_token = tokenizer.eos_token
    has_headers = all(token in vocab for token in (HEADER_START, HEADER_END, END_OF_TURN))
    tokenizer.chat_template = CHAT_TEMPLATE if has_headers else PLAIN_CHAT_TEMPLATE
    return tokenizer
