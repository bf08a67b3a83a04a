"""Loading Hugging Face models and tokenizers safely (safetensors only, no remote code by default)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from prunekit.errors import PrunekitError, first_line
from prunekit.folders import load_tokenizer, locate, names_damaged_file  # locate, load_tokenizer: public here too
from prunekit.io.formats import register_format
from prunekit.io.shapes import MANIFEST, PACKED_WEIGHTS, load  # prunekit's own formats, registered on import
from prunekit.io.textnet import is_custom_dir, is_textnet_dir, load_textnet

# transformers 5 logs a long "layers were not sharded" list on every load once `accelerate` has set up
# its process state; it is not actionable for a single-device model, so keep it out of the user's way.
logging.getLogger("transformers.distributed.tensor_parallel").setLevel(logging.ERROR)

_GENERIC_LABEL = re.compile(r"^LABEL_(\d+)$")


@names_damaged_file("spec")
def load_config(spec: str, trust_remote_code: bool = False) -> tuple[str, PretrainedConfig]:
    where = locate(spec)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise PrunekitError(f"model {spec!r}: cannot read its config ({first_line(err)})") from err
    return where, config


def label_names_of(config: PretrainedConfig) -> list[str]:
    """The model's label names in id order; generic ``LABEL_i`` names mean plain integer labels."""
    names = [str(config.id2label[i]) for i in range(len(config.id2label))]
    return [m.group(1) if (m := _GENERIC_LABEL.match(n)) else n for n in names]


#: What a checkpoint's head was trained for, by the part of its class name in config.json ``architectures``
#: that says so. The one table prunekit reads tasks from; a name matching none is a bare model (BertModel).
HEAD_TASKS: dict[str, str] = {
    "ForSequenceClassification": "sequence classification",
    "ForCausalLM": "causal LM",
    "LMHeadModel": "causal LM",  # GPT2LMHeadModel, GPTJ..., BertLMHeadModel (BERT as a decoder)
    "ForMaskedLM": "masked LM",
    "ForPreTraining": "pre-training",
    "ForTokenClassification": "token classification",
    "ForQuestionAnswering": "question answering",
    "ForMultipleChoice": "multiple choice",
    "ForNextSentencePrediction": "next-sentence prediction",
    "ForConditionalGeneration": "sequence-to-sequence generation",
    "ForImageClassification": "image classification",
}

#: The heads (None: a bare model) each prunekit task starts from; any other head is refused rather than
#: silently swapped for a fresh one. A classifier keeps a sequence-classification head or gets a new one on
#: the body: BertForMaskedLM / *ForPreTraining are the usual "bare" encoder checkpoints (the body plus a
#: pre-training head that is simply dropped), and a decoder LM's body classifies too (GPT-2, LLaMA). An LM
#: needs its trained LM head: on a bare model it would be new (or, for BERT, half new), so bare is refused.
TASK_HEADS: dict[str, frozenset[str | None]] = {
    "classification": frozenset({"sequence classification", None, "masked LM", "pre-training", "causal LM"}),
    "lm": frozenset({"causal LM"}),
    # a regression head sits on an encoder's body (a decoder LM's next-token head is no place to start)
    "regression": frozenset({"sequence classification", None, "masked LM", "pre-training"}),
    # a tagger keeps its token-classification head or gets a new one on an encoder's body
    "token-classification": frozenset({"token classification", None, "masked LM", "pre-training"}),
    "question-answering": frozenset({"question answering", None, "masked LM", "pre-training"}),
    # sentence embeddings pool an encoder's token vectors: a bare encoder (or one with its pre-training head)
    "embedding": frozenset({None, "masked LM", "pre-training"}),
}

#: The head a task trains and keeps (a checkpoint with it is loaded as it is; any other allowed one gets a new
#: head of this kind), and the transformers class that builds it.
OWN_HEADS: dict[str, tuple[str, type]] = {
    "classification": ("sequence classification", AutoModelForSequenceClassification),
    "token-classification": ("token classification", AutoModelForTokenClassification),
}


def head_of(config: PretrainedConfig) -> tuple[str, str | None]:
    """The architecture name and what its head does (None: a bare model), per :data:`HEAD_TASKS`."""
    archs = config.architectures or []
    for arch in archs:
        for part, task in HEAD_TASKS.items():
            if part in arch:
                return arch, task
    return (archs[0] if archs else config.model_type), None


#: What a task's model must be, for the one-line refusal of a model with another task's head.
TASK_NEEDS: dict[str, str] = {
    "regression": "an encoder: a bare model or a *ForSequenceClassification with one regression output",
    "token-classification": "an encoder: a bare model or a *ForTokenClassification",
    "question-answering": "an encoder: a bare model or a *ForQuestionAnswering",
    "embedding": "a sentence encoder: a sentence-transformers folder or a bare encoder (BertModel, ...)",
}


def check_task(spec: str, config: PretrainedConfig, task: str) -> None:
    """Refuse, before any weights load, a model whose head is for a task other than ``task``
    (a key of :data:`TASK_HEADS`): a token classifier must not quietly become a sequence classifier."""
    arch, head = head_of(config)
    if head in TASK_HEADS[task]:
        return
    if task == "lm":
        raise PrunekitError(f"model {spec!r} is not a causal language model: it is a {arch} ({head or 'no LM head'})"
                            "; --task lm needs a decoder LM (*ForCausalLM) such as GPT-2, LLaMA, Qwen or SmolLM2")
    if task in TASK_NEEDS:
        raise PrunekitError(f"model {spec!r} is a {arch} ({head}); --task {task} needs {TASK_NEEDS[task]}")
    raise PrunekitError(f"model {spec!r} is a {arch} ({head}); prunekit supports sequence classification and "
                        "causal LMs (--task lm) for now")


def has_classification_head(config: PretrainedConfig) -> bool:
    return head_of(config)[1] == "sequence classification"


@names_damaged_file("spec")
def load_classifier(
    spec: str, label_names: list[str] | None = None, trust_remote_code: bool = False,
    module: str | None = None, module_kwargs: dict | None = None, task: str = "classification",
) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
    """A sequence classifier (or, with ``task="token-classification"``, a token classifier), its tokenizer, and
    whether its head is new (must be trained first).

    A folder saved with a classification head keeps its labels; a bare encoder gets a fresh head
    sized to ``label_names``, whose names are stored in the config so predictions stay readable.
    ``module``/``module_kwargs`` rebuild a user's own module saved by prunekit (``--module``).
    """
    if (module is not None or module_kwargs is not None) and not is_custom_dir(Path(spec).expanduser()):
        raise PrunekitError(f"--module/--module-kwargs rebuild a custom module folder saved by prunekit; {spec!r} is "
                            "not one (to train a new instance of your module: prunekit finetune --module)")
    if is_textnet_dir(spec):  # an LSTM/GRU/RNN or TextCNN classifier, or a user's module, saved by prunekit
        model = load_textnet(spec, module, module_kwargs, trust_remote_code)
        return model, load_tokenizer(str(Path(spec).expanduser()), trust_remote_code), False
    where, config = load_config(spec, trust_remote_code)
    check_task(spec, config, task)
    own_head, auto_class = OWN_HEADS[task]
    if (Path(where) / MANIFEST).is_file():  # structurally pruned by prunekit: uneven shapes need its loader
        if head_of(config)[1] != own_head:
            raise PrunekitError(f"model {spec!r} is a pruned model without a {own_head} head")
        model = load(where, trust_remote_code)
        return model, _with_padding(model, load_tokenizer(where, trust_remote_code), spec), False
    head_is_new = head_of(config)[1] != own_head
    if head_is_new:
        if not label_names:
            raise PrunekitError(f"model {spec!r} has no classification head; give data so one can be trained")
        config.num_labels = len(label_names)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
    # transformers warns loudly about the freshly initialised head; prunekit says it once itself.
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        model = auto_class.from_pretrained(
            where, config=config, trust_remote_code=trust_remote_code, use_safetensors=_safetensors_only(where)
        )
    except ValueError as err:
        raise PrunekitError(
            f"model {spec!r}: prunekit cannot build a {own_head} model for model_type "
            f"{config.model_type!r} ({first_line(err)})"
        ) from err
    except OSError as err:
        raise PrunekitError(f"model {spec!r}: cannot load weights ({first_line(err)})") from err
    finally:
        logger.setLevel(level)
    return model, _with_padding(model, load_tokenizer(where, trust_remote_code), spec), head_is_new


def _with_padding(model: nn.Module, tokenizer: PreTrainedTokenizerBase, spec: str) -> PreTrainedTokenizerBase:
    """A decoder turned classifier (GPT-2, LLaMA) usually ships without a padding token, and transformers then
    refuses any batch larger than one; pad with end-of-text, as is the usual fix, and tell the model, whose
    classification head reads the last non-pad token by that id. Saved folders keep both."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise PrunekitError(f"model {spec!r}: its tokenizer has neither a padding nor an end-of-text token to "
                                "pad batches with; add a pad_token to the tokenizer")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


@names_damaged_file("spec")
def load_any(spec: str, trust_remote_code: bool = False) -> nn.Module:
    """Whatever the folder holds: a classifier, a causal LM, or a bare encoder."""
    where, config = load_config(spec, trust_remote_code)
    if has_classification_head(config):
        cls = AutoModelForSequenceClassification
    elif is_causal_lm(config):
        cls = AutoModelForCausalLM
    else:
        cls = AutoModel
    try:
        return cls.from_pretrained(where, trust_remote_code=trust_remote_code, use_safetensors=_safetensors_only(where))
    except (OSError, ValueError) as err:
        raise PrunekitError(f"model {spec!r}: cannot load ({first_line(err)})") from err


def _safetensors_only(where: str) -> bool | None:
    """Local folders must hold safetensors: never unpickle an untrusted ``pytorch_model.bin``."""
    path = Path(where)
    if not path.exists():
        return True
    if not any(path.glob("*.safetensors")):
        raise PrunekitError(
            f"model folder {where} has no .safetensors weights; prunekit does not unpickle .bin files "
            "(convert them once with transformers' save_pretrained(safe_serialization=True))"
        )
    return True


def is_causal_lm(config: PretrainedConfig) -> bool:
    return head_of(config)[1] == "causal LM"


@names_damaged_file("spec")
def load_causal_lm(spec: str, trust_remote_code: bool = False) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A decoder language model and its tokenizer; anything else (an encoder, a classifier) is a clear error.

    prunekit's own sparse folders (``model.packed.safetensors``) load through :func:`prunekit.load`.
    """
    where, config = load_config(spec, trust_remote_code)
    check_task(spec, config, "lm")
    if Path(where, PACKED_WEIGHTS).is_file() or Path(where, MANIFEST).is_file():
        model = load(where)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(where, trust_remote_code=trust_remote_code,
                                                         use_safetensors=_safetensors_only(where), dtype="auto")
        except (OSError, ValueError) as err:
            raise PrunekitError(f"model {spec!r}: cannot load ({first_line(err)})") from err
    tokenizer = load_tokenizer(where, trust_remote_code)
    return model.eval(), tokenizer


# The fallback saved format (see prunekit.io.formats): a plain transformers folder, built-in name or hub id.
register_format("transformers", lambda folder: not folder.is_dir() or (folder / "config.json").is_file(),
                lambda folder, trust_remote_code: load_any(str(folder), trust_remote_code), priority=0,
                looks_for="config.json")
