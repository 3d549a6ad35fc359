"""Moved to :mod:`flexretrofit.tokenizer` (data, sampling and models all use it); the names stay importable here."""

from flexretrofit.tokenizer import (  # noqa: F401
    CHAT_TEMPLATE,
    END_OF_TURN,
    HEADER_END,
    HEADER_START,
    MASK_TOKEN,
    PLAIN_CHAT_TEMPLATE,
    TokenizerLoadError,
    load_tokenizer,
    prepare_tokenizer,
    stop_token_ids,
)
