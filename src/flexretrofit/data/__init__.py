"""Data: corpora cut into chunks, instruction formats, length-grouped batches, and the diffusion collators.

Dataset -> samples ``{"input_ids", "prompt_mask", "length"}`` (:mod:`.corpus`, :mod:`.formats`) ->
length-grouped batches (:mod:`.batching`; from a stream: :mod:`.streaming`) -> padded and noised tensors
for the model and the loss (:mod:`.collator`).
"""

from flexretrofit.data.batching import LengthGroupedBatchSampler, padding_efficiency
from flexretrofit.data.collator import FlexMDMCollator, MDMCollator, pad_samples
from flexretrofit.data.corpus import (
    DataError,
    DocumentChunker,
    TextSource,
    boundary_token_ids,
    chunk_documents,
    chunk_token_ids,
    load_chunked_mixture,
    load_text_dataset,
    mix_datasets,
    published_transfer_mix,
    resolve_data_files,
)
from flexretrofit.data.formats import (
    BOUNDARY_TOKEN,
    GSM8K_SYSTEM_PROMPT,
    CodeInfillFormat,
    FixedCanvasFormat,
    GSM8KAnswer,
    GSM8KFormat,
    PromptCompletionFormat,
    format_dataset,
    gsm8k_target,
    infill_layout,
    pad_to_canvas,
    parse_gsm8k_answer,
    record_problem,
    resolve_boundary_token_id,
)
from flexretrofit.data.streaming import LengthGroupedStream

__all__ = [
    "BOUNDARY_TOKEN",
    "GSM8K_SYSTEM_PROMPT",
    "CodeInfillFormat",
    "DataError",
    "DocumentChunker",
    "FixedCanvasFormat",
    "FlexMDMCollator",
    "GSM8KAnswer",
    "GSM8KFormat",
    "LengthGroupedBatchSampler",
    "LengthGroupedStream",
    "MDMCollator",
    "PromptCompletionFormat",
    "TextSource",
    "boundary_token_ids",
    "chunk_documents",
    "chunk_token_ids",
    "format_dataset",
    "gsm8k_target",
    "infill_layout",
    "load_chunked_mixture",
    "load_text_dataset",
    "mix_datasets",
    "pad_samples",
    "pad_to_canvas",
    "padding_efficiency",
    "parse_gsm8k_answer",
    "published_transfer_mix",
    "record_problem",
    "resolve_boundary_token_id",
    "resolve_data_files",
]
