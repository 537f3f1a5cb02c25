"""Record a per-epoch trace of a Hugging Face Trainer run that evaluates every n steps.

    PYTHONPATH=. python bench/record_hf_trace.py --size tiny            # CPU, ~1 minute
    PYTHONPATH=. python bench/record_hf_trace.py --size small --suffix h100   # on a GPU

A GPT-2-shaped model built from a config (nothing is downloaded) trains on random tokens with
``eval_strategy="steps"``: the evaluations fall after steps that are multiples of
``--eval-steps``, which the epochs do not divide, so they land in some epochs and not others
(and the Trainer adds one after the last step). ``CarbonCallback`` measures the run, gives the
tracker the evaluation plan, and writes the run log; the trace (``bench/predict_accuracy.py``'s
format, with the plan) is converted from that run log and written to ``--out``. Compare the
predictions with and without the plan::

    PYTHONPATH=. python bench/predict_accuracy.py bench/traces/hf_step_eval/*.json
    PYTHONPATH=. python bench/predict_accuracy.py bench/traces/hf_step_eval/*.json --no-plans
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hf_proof import Tokens  # noqa: E402
from predict_accuracy import trace_from_run_log  # noqa: E402

from carbon_callbacks.integrations.huggingface import CarbonCallback  # noqa: E402

#: name -> (layers, width, heads, vocabulary, sequence length, train samples, eval samples,
#: train batch, eval batch, eval every n steps, epochs)
SIZES: dict[str, tuple[int, ...]] = {
    # for the test: 4 steps per epoch, evaluation every 3 steps (1 batch each), 4 epochs
    "micro": (1, 16, 2, 64, 8, 32, 8, 8, 8, 3, 4),
    # CPU: 64 steps per epoch, evaluation every 96 steps (8 batches): epochs 1, 2, 4, 5, 7...
    "tiny": (2, 64, 2, 512, 64, 1024, 256, 16, 32, 96, 14),
    # GPU: 128 steps per epoch, evaluation every 200 steps (16 batches each)
    "small": (4, 256, 4, 8192, 128, 4096, 1024, 32, 64, 200, 14),
}


def record(
    size: str,
    suffix: str,
    out_dir: Path,
    note: str,
    eval_steps: int | None = None,
    eval_samples: int | None = None,
) -> Path:
    """Train once and write the trace; returns its path. ``eval_steps`` and ``eval_samples``
    override the size's."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    layers, width, heads, vocab, length, n_train, n_eval, bs, ebs, every, epochs = SIZES[size]
    every = eval_steps or every
    n_eval = eval_samples or n_eval
    torch.manual_seed(0)
    gpu = torch.cuda.is_available()
    config = GPT2Config(
        n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab, n_positions=length
    )
    tmp = tempfile.mkdtemp(prefix="hf_trace_")
    name = f"hf-gpt2-{size}-eval-{n_eval}-every-{every}-steps-{suffix}"
    callback = CarbonCallback(log_dir=tmp, run_name=name, zone="DE", verbose=0)
    args = TrainingArguments(
        output_dir=tmp, num_train_epochs=epochs, per_device_train_batch_size=bs,
        per_device_eval_batch_size=ebs, eval_strategy="steps", eval_steps=every,
        logging_strategy="epoch", save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not gpu, bf16=gpu, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = Trainer(
        model=GPT2LMHeadModel(config),
        args=args,
        train_dataset=Tokens(n_train, length, vocab, seed=0),
        eval_dataset=Tokens(n_eval, length, vocab, seed=1),
        callbacks=[callback],
    )
    trainer.train()
    trace = trace_from_run_log(callback.tracker.log_path)
    trace["name"] = name
    trace["description"] = (
        f"Hugging Face Trainer, GPT-2 shape ({layers} layers, width {width}, vocabulary "
        f"{vocab}, {length} tokens), {n_train} training samples in batches of {bs}, "
        f"evaluation of {n_eval} samples every {every} steps, {epochs} epochs, "
        f"{'GPU ' + torch.cuda.get_device_name(0) if gpu else 'CPU'}"
    )
    trace["recorded_with"]["command"] = (
        f"PYTHONPATH=. python bench/record_hf_trace.py --size {size} --suffix {suffix}"
        + (f" --eval-steps {eval_steps}" if eval_steps else "")
        + (f" --eval-samples {eval_samples}" if eval_samples else "")
    )
    trace["recorded_with"]["note"] = note
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(trace, indent=1) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--suffix", default="cpu", help="appended to the trace's name")
    parser.add_argument("--out", default=str(HERE / "traces" / "hf_step_eval"))
    parser.add_argument("--note", default="", help="stored in recorded_with.note")
    parser.add_argument("--eval-steps", type=int, default=None, help="instead of the size's")
    parser.add_argument("--eval-samples", type=int, default=None, help="instead of the size's")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = record(
        args.size, args.suffix, Path(args.out), args.note, args.eval_steps, args.eval_samples
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
