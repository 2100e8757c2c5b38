"""Child process that runs lm-eval once: ``python -m airlock.evaluate._worker SPEC.json OUT.json``.

Run as its own process (see :func:`airlock.evaluate.run.evaluate_model`) because ``datasets`` and
``huggingface_hub`` read their offline switches and cache locations when first imported, lm-eval
records the working directory's git state, and a model load should not share a long-lived Airflow
worker's memory. The parent gives this process a scrubbed environment and a neutral cwd.

Writes only what the EvalReport needs (no samples: they can hold the model's raw outputs at length).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    """lm-eval results hold torch dtypes and numpy scalars; reports hold plain JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def run(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"

    import datasets
    import lm_eval
    import transformers
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    model_dir = Path(spec["model_dir"])
    model_args: dict[str, Any] = {
        "pretrained": str(model_dir),
        "dtype": spec["dtype"],
        "trust_remote_code": False,
    }
    # Prefer safetensors: when the directory has them, never fall back to a pickle-based file beside them.
    if any(model_dir.glob("*.safetensors")):
        model_args["use_safetensors"] = True

    started = time.monotonic()
    tracker = EvaluationTracker(output_path=spec["tracker_dir"])
    task_manager = TaskManager(include_path=spec["include_path"], include_defaults=False)
    seed = int(spec["seed"])
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=list(spec["tasks"]),
        num_fewshot=spec["num_fewshot"],
        batch_size=spec["batch_size"],
        device=device,
        limit=spec["limit"],
        bootstrap_iters=spec["bootstrap_iters"],
        log_samples=True,
        evaluation_tracker=tracker,
        task_manager=task_manager,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    samples = results.pop("samples", None)
    # task_hashes (sha256 over each sample's doc, prompt and target hashes) is computed only here.
    tracker.save_results_aggregated(results=results, samples=samples)
    config = results.get("config", {})
    return _jsonable({
        "results": results["results"],
        "versions": results.get("versions", {}),
        "n-samples": results.get("n-samples", {}),
        "n-shot": results.get("n-shot", {}),
        "higher_is_better": results.get("higher_is_better", {}),
        "task_hashes": results.get("task_hashes", {}),
        "model_dtype": str(config.get("model_dtype", "")).removeprefix("torch."),
        "model_num_parameters": config.get("model_num_parameters"),
        "device": device,
        "device_name": device_name,
        "threads": torch.get_num_threads(),
        "lm_eval_version": lm_eval.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "datasets_version": datasets.__version__,
        "python_version": sys.version.split()[0],
        "seconds": time.monotonic() - started,
        "use_safetensors": model_args.get("use_safetensors", False),
    })


def main(argv: list[str]) -> int:
    spec_path, out_path = map(Path, argv)
    out = run(json.loads(spec_path.read_text()))
    out_path.write_text(json.dumps(out, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
