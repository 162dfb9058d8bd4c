"""MosaicBERT configuration (a Hugging Face ``PretrainedConfig``).

Every architectural choice of Portes et al. 2023 is a field here, with the paper's value as default.
This file imports only transformers, so it ships unchanged inside exported model folders.
"""

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

ATTENTION_BACKENDS = ("auto", "flash_attn", "flex", "sdpa", "sdpa_packed")


class MosaicBertConfig(PretrainedConfig):
    r"""Configuration of a MosaicBERT encoder.

    Args:
        vocab_size: vocabulary size; MosaicBERT pads bert-base-uncased's 30522 to 30528 (multiple of 64).
        hidden_size, num_hidden_layers, num_attention_heads: encoder shape (base: 768 / 12 / 12).
        intermediate_size: width of the gated feed-forward (GeGLU); the input projection is twice this.
        hidden_act: activation on the gate half of the GLU ("gelu" = exact erf GELU as in the paper).
        hidden_dropout_prob: dropout on embeddings and sub-layer outputs (0.1).
        attention_probs_dropout_prob: dropout on attention weights (0.0 in the paper; flex does not support >0).
        type_vocab_size: number of token-type (segment) ids.
        initializer_range: std of the normal init of weights (BERT: 0.02).
        layer_norm_eps: LayerNorm epsilon.
        alibi_starting_size: unused by the math (ALiBi has no maximum length); kept, as in the original
            MosaicBERT config, to record the length the model was trained at.
        attention_backend: "auto" | "flash_attn" | "flex" | "sdpa" | "sdpa_packed". "auto" picks flash_attn
            on CUDA with fp16/bf16 activations when flash-attn provides ``flash_attn_varlen_qkvpacked_func``
            (flash-attn 2; flash-attn 4 does not), else SDPA: "sdpa_packed" when the caller gives a packing
            plan made on the host (the Composer model does), else "sdpa". "sdpa" attends over one row per
            sequence; "sdpa_packed" over rows that each hold several short sequences (a block-diagonal
            bias): fewer rows when rows are padded, the same at full rows. "flex" (FlexAttention on the
            packed tokens) stays selectable; SDPA ran faster than it at full and at padded rows.
        low_precision_layernorm: run LayerNorm in the autocast dtype (bf16) rather than fp32.
        prenorm: pre-LN blocks instead of the paper's post-LN.
        glu_dropout: where the feed-forward dropout sits: "intermediate" (on the GLU output, before the
            down projection, as in the paper's code) or "output" (after it, as BERT does; cheaper).
        fast_dropout: under torch.compile, draw dropout masks from an integer hash of the element index and
            a per-call seed, fused into the neighbouring kernel, instead of torch's Philox random numbers
            (same Bernoulli(1 - p) masks and scaling, much less work; eager mode always uses torch's).
        mlm_only_masked: apply the MLM head only at masked positions when labels are given.
        pad_vocab_multiple: the multiple the vocabulary is padded to by the recipe builders (64).
        classifier_dropout: dropout before the sequence-classification head (defaults to hidden dropout).
        tie_word_embeddings: share the MLM decoder weight with the word embeddings (as BERT does).
    """

    model_type = "mosaic_bert"

    def __init__(
        self,
        vocab_size: int = 30528,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.0,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        alibi_starting_size: int = 512,
        attention_backend: str = "auto",
        low_precision_layernorm: bool = True,
        prenorm: bool = False,
        glu_dropout: str = "intermediate",
        fast_dropout: bool = True,
        mlm_only_masked: bool = True,
        pad_vocab_multiple: int = 64,
        classifier_dropout: float | None = None,
        pad_token_id: int = 0,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        # The MLM decoder shares the word embeddings (transformers 5 reads this from the config).
        self.tie_word_embeddings = tie_word_embeddings
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.alibi_starting_size = alibi_starting_size
        self.attention_backend = attention_backend
        self.low_precision_layernorm = low_precision_layernorm
        self.prenorm = prenorm
        self.glu_dropout = glu_dropout
        self.fast_dropout = fast_dropout
        self.mlm_only_masked = mlm_only_masked
        self.pad_vocab_multiple = pad_vocab_multiple
        self.classifier_dropout = classifier_dropout
        self.check_values()

    def check_values(self) -> None:
        """Raise ValueError naming the first field whose value no model can be built from. Run by
        ``__init__`` and again when a model is built: ``from_pretrained(folder, key=value)`` sets its
        overrides on the loaded config without passing them through ``__init__``."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "type_vocab_size", "pad_vocab_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads}).")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name}={value!r} must be a probability in [0, 1).")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend={self.attention_backend!r}; allowed: {', '.join(ATTENTION_BACKENDS)}.")
        if self.attention_backend == "flex" and self.attention_probs_dropout_prob > 0:
            raise ValueError("attention_backend='flex' has no attention dropout: set attention_probs_dropout_prob=0 "
                             "(the paper's value) or choose another backend.")
        if self.glu_dropout not in ("intermediate", "output"):
            raise ValueError(f"glu_dropout={self.glu_dropout!r} is not 'intermediate' (the paper's code) or 'output'.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not an activation transformers knows "
                             f"(e.g. 'gelu', the paper's; 'gelu_new', 'relu', 'silu').")
