"""The adapter contract: task types, results, the settings schema, and the training loop.

A framework plugs in by subclassing TrainingAdapter and filling in the model, data, epoch,
validation, checkpoint and inference steps; `train()` and `check()` are shared.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

SCHEMAS = Path(__file__).resolve().parent / "schemas"


class TaskType(str, Enum):
    """The tasks of the plan."""

    IMAGE_CLASSIFICATION = "image_classification"
    OBJECT_DETECTION = "object_detection"
    INSTANCE_SEGMENTATION = "instance_segmentation"
    POSE_ESTIMATION = "pose_estimation"
    OBB_DETECTION = "obb_detection"
    SEMANTIC_SEGMENTATION = "semantic_segmentation"
    IMAGE_CAPTIONING = "image_captioning"


@dataclass
class MetricsResult:
    """One epoch's results."""

    epoch: int
    step: int = 0
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    metrics: dict = field(default_factory=dict)


@dataclass
class InferenceResult:
    """Task-agnostic inference output; fields that do not apply stay None."""

    task: str
    predicted_label_id: Optional[int] = None
    predicted_label: Optional[str] = None
    confidence: Optional[float] = None
    top5_predictions: Optional[list] = None
    boxes: Optional[list] = None
    masks: Optional[list] = None
    keypoints: Optional[list] = None
    rotated_boxes: Optional[list] = None
    caption: Optional[str] = None
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ConfigField:
    """One setting of a framework, enough for a UI to render a form field."""

    name: str
    type: str
    default: Any = None
    min: Optional[float] = None
    max: Optional[float] = None
    options: Optional[list] = None
    description: str = ""
    group: str = "general"
    advanced: bool = False


@dataclass
class ConfigSchema:
    """A framework's settings."""

    framework: str
    fields: list

    @classmethod
    def load(cls, framework: str) -> "ConfigSchema":
        """From adapters/schemas/FRAMEWORK.json, the file the control plane reads as data."""
        data = json.loads((SCHEMAS / f"{framework}.json").read_text())
        return cls(data["framework"], [ConfigField(**f) for f in data["fields"]])

    def as_dict(self) -> dict:
        return {"framework": self.framework, "fields": [asdict(f) for f in self.fields]}


class BadConfig(Exception):
    """A setting the framework cannot use: the job fails with reason bad_config."""


def is_oom(exc: BaseException) -> bool:
    """Whether an exception is an out-of-memory error (CUDA or host).

    Host memory: Python's MemoryError, and torch's CPU allocator, which raises a plain RuntimeError
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes. Error code 12
    (Cannot allocate memory)") when malloc fails, as it does under the job's address-space limit
    (resources.memory_gb)."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower() or is_host_oom(exc)


def is_host_oom(exc: BaseException) -> bool:
    """Whether an exception says the host's memory ran out (not a GPU's)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return "can't allocate memory" in text or "cannot allocate memory" in text


def inject_oom(batch_size: int):
    """Fault injection for tests: FAULT_OOM_ABOVE_BATCH=N makes a batch size above N raise the
    real exception torch raises when memory runs out (the retry policy around it is then real)."""
    fault = os.environ.get("FAULT_OOM_ABOVE_BATCH")
    if fault and batch_size > int(fault):
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory (injected: batch_size {batch_size} > {fault})")


def write_json(path, data):
    """Atomic JSON write."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


class TrainingAdapter:
    """Base of every framework adapter. `cfg` is the job.json the translator wrote."""

    framework = "base"
    checkpoint_suffix = ".pth"

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.out = Path(cfg.get("output_dir") or ".")
        self.ckpt_dir = self.out / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.epochs = int(cfg.get("epochs", 1))
        self.batch_size = int(cfg.get("batch_size", 8))
        self.start_epoch = 1
        self.best = None

    # -- the contract -----------------------------------------------------------------------
    def prepare_model(self):
        raise NotImplementedError

    def prepare_dataset(self):
        raise NotImplementedError

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training set; returns the mean training loss."""
        raise NotImplementedError

    def validate(self, epoch: int) -> MetricsResult:
        raise NotImplementedError

    def save_checkpoint(self, path: Path, epoch: int, result: MetricsResult):
        raise NotImplementedError

    def load_checkpoint(self, path: Path) -> int:
        """Load weights (and optimizer state); returns the epoch the checkpoint ended."""
        raise NotImplementedError

    def preprocess_image(self, image_path: str):
        raise NotImplementedError

    def infer_single(self, image_path: str) -> InferenceResult:
        raise NotImplementedError

    @classmethod
    def get_config_schema(cls) -> ConfigSchema:
        return ConfigSchema.load(cls.framework)

    def primary_metric(self, result: MetricsResult) -> float:
        """Higher is better; decides best.pt."""
        return -(result.val_loss or 0.0)

    # -- shared -------------------------------------------------------------------------------
    @staticmethod
    def metrics_line(epoch: int, epochs: int, result: MetricsResult, extra: dict) -> str:
        """The standard per-epoch line that the framework's log parser reads."""
        parts = [f"epoch={epoch}/{epochs}"]
        if result.train_loss is not None:
            parts.append(f"train_loss={result.train_loss:.6g}")
        if result.val_loss is not None:
            parts.append(f"val_loss={result.val_loss:.6g}")
        for k, v in {**result.metrics, **extra}.items():
            if v is not None:
                parts.append(f"{k}={v:.6g}")
        return "[metrics] " + " ".join(parts)

    def current_lr(self) -> Optional[float]:
        return None

    def fit(self):
        """Run the epochs (resuming if asked), print one metrics line each, write last/best."""
        resume = self.cfg.get("resume")
        if resume:
            self.start_epoch = self.load_checkpoint(Path(resume)) + 1
            print(f"runner: resumed from {resume} at epoch {self.start_epoch}", flush=True)
        gate = StopGate()  # SIGTERM (a preemption, a cancel) stops training, never between an epoch's line and its checkpoint
        result = None
        for epoch in range(self.start_epoch, self.epochs + 1):
            t0 = time.time()
            train_loss = self.train_epoch(epoch)
            result = self.validate(epoch)
            result.train_loss = train_loss
            extra = {"lr": self.current_lr(), "epoch_time": time.time() - t0}
            with gate.held():  # the epoch's line and its checkpoint go together: a resumed run never prints it again
                print(self.metrics_line(epoch, self.epochs, result, extra), flush=True)
                self.save_checkpoint(self.ckpt_dir / "last.pth", epoch, result)
                score = self.primary_metric(result)
                if self.best is None or score >= self.best:
                    self.best = score
                    self.save_checkpoint(self.ckpt_dir / "best.pth", epoch, result)
        return result

    def run_train(self) -> int:
        """train with the OOM policy: auto_batch_size halves the batch once and says so.

        The handler only records that a retry is due. The retry starts after it has ended: while
        the exception is handled, its traceback keeps every frame of the failed step alive, and
        with them the step's activations and batch, the very memory the retry needs. A GPU's
        memory is then given back to the device (release()); the host's is not given back to the
        system reliably (see _retry_in_a_fresh_process), so after a host OOM the retry runs in a
        fresh process."""
        try:
            self.prepare_dataset()
            self.prepare_model()
            self.fit()
            return 0
        except Exception as e:
            if not (is_oom(e) and self.cfg.get("auto_batch_size") and not self.cfg.get("_oom_retried") and self.batch_size > 1):
                raise
            half = max(1, self.batch_size // 2)
            fresh = is_host_oom(e)
            said = (str(e).strip().splitlines() or [""])[0][:300]  # what ran out, as torch says it ("Tried to allocate ...")
            print(f"runner: {type(e).__name__}: {said}", flush=True)
            print(f"runner: out of memory at batch_size={self.batch_size}; retrying once with batch_size={half} (auto_batch_size"
                  + ("; the host's memory: in a fresh process)" if fresh else ")"), flush=True)
            retry = dict(self.with_batch_size(half), _oom_retried=True)
        # `e` and its traceback are gone here; release() drops this attempt's model and data too
        self.release()
        if fresh:
            return self._retry_in_a_fresh_process(retry)
        return type(self)(retry).run_train()

    @staticmethod
    def _retry_in_a_fresh_process(cfg: dict) -> int:
        """The retry after the host's memory ran out, as a fresh interpreter in this process (exec:
        the same pid, the same log, the job's limits): the C allocator keeps much of what the failed
        attempt freed mapped in this one (glibc gives back only what lies at the top of a heap), and
        an address-space limit (resources.memory_gb) counts it, so a retry here could run out again
        though half the batch fits (CI saw it: the retry's first convolution could not get its 200 MB)."""
        path = Path(cfg.get("output_dir") or ".") / "oom-retry.json"
        write_json(path, cfg)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "adapters", "train", str(path)])
        return 1  # (not reached)

    def with_batch_size(self, n: int) -> dict:
        """This job's settings with another batch size (for the out-of-memory retry)."""
        return dict(self.cfg, batch_size=n)

    def release(self):
        """Drop references to the model and data so that a retry can reuse the memory: this
        attempt's attributes, what only reference cycles still hold, and the blocks torch's CUDA
        allocator keeps cached for itself (when CUDA was used)."""
        import gc

        self.__dict__.clear()
        gc.collect()
        torch = sys.modules.get("torch")  # never imported here: a framework without torch has nothing cached
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def check(self) -> dict:
        """The plugin check: load, one epoch of training, validation, checkpoint round trip,
        inference, then `learns`: training goes on to the check's `learns_epochs` and the model must
        beat chance on the (easy) validation set (judged by runner/check.py, which states the thresholds)."""
        report = {"framework": self.framework, "model": self.cfg.get("model_name"), "task": self.cfg.get("task"), "checks": []}
        sizes = (self.cfg.get("check") or {}).get("sizes") or {}
        learn_epochs = int(sizes.get("learns_epochs") or 0)
        if learn_epochs > 1:
            self.epochs = learn_epochs  # schedules span the whole check run, not its first epoch

        def step(name, fn):
            t0 = time.perf_counter()
            try:
                detail = fn()
                report["checks"].append({"name": name, "ok": True, "seconds": time.perf_counter() - t0, "detail": detail})
                return True
            except Exception as e:
                traceback.print_exc()
                report["checks"].append({"name": name, "ok": False, "seconds": time.perf_counter() - t0,
                                         "error": f"{type(e).__name__}: {e}"[:2000]})
                return False

        state = {}
        ok = step("load", lambda: (self.prepare_dataset(), self.prepare_model(), {"params": self.param_count()})[2])
        if ok:
            def _train():
                state["train_loss"] = self.train_epoch(1)
                return {"train_loss": state["train_loss"]}
            ok = step("train", _train)
        if ok:
            def _val():
                r = self.validate(1)
                state["result"] = r
                print(self.metrics_line(1, self.epochs, r, {}), flush=True)
                return {"val_loss": r.val_loss, **r.metrics}
            ok = step("validate", _val)
        if ok:
            def _ckpt():
                path = self.ckpt_dir / f"check{self.checkpoint_suffix}"
                self.save_checkpoint(path, 1, state["result"])
                size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                detail = {"epoch": self.load_checkpoint(path), "bytes": size}
                if not os.environ.get("RUNNER_CHECK_KEEP"):
                    # a check's checkpoint is only proof of the round trip; a ViT-L one is ~3.6 GB
                    import shutil

                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                return detail
            step("checkpoint", _ckpt)
            step("infer", lambda: self.infer_single(self.sample_image()).as_dict())
            report["checks"].append(self._learns(learn_epochs, sizes, state))
            ck = next(c for c in report["checks"] if c["name"] == "checkpoint")
            if ck["ok"] and state.get("final") is not None:
                # the real reload: the model at the end of training, saved, loaded in a fresh process
                t0 = time.perf_counter()
                try:
                    ck["detail"]["reload"] = self._reload_check(*state["final"])
                except Exception as e:  # noqa: BLE001 - its failure is the check's verdict
                    traceback.print_exc()
                    ck.update(ok=False, error=f"reload: {type(e).__name__}: {e}"[:2000])
                ck["seconds"] += time.perf_counter() - t0
        counted = [c for c in report["checks"] if c["ok"] is not None]  # ok None: n/a, with its reason
        n_ok = sum(bool(c["ok"]) for c in counted)
        report["status"] = "success" if len(report["checks"]) == 6 and n_ok == len(counted) else ("failed" if n_ok == 0 else "partial")
        write_json(self.out / "check.json", report)
        print(f"runner: check {report['status']} ({n_ok}/{len(counted)})", flush=True)
        return report

    # -- learns: more than "it ran" -------------------------------------------------------------
    def learns_target(self) -> tuple[str, Optional[int]]:
        """(the task's main validation metric, its number of classes where chance is 1/classes,
        else None). Classification metrics are fractions in [0, 1]."""
        raise NotImplementedError

    def train_more(self, first: int, last: int) -> list:
        """Train epochs first..last; the mean training loss of each."""
        return [self.train_epoch(e) for e in range(first, last + 1)]

    def _learns(self, epochs: int, sizes: dict, state: dict) -> dict:
        """The learns check's numbers (main metric, classes, training loss per epoch), judged by
        `runner check` against the thresholds it states; ok False where training broke."""
        t0 = time.perf_counter()
        if epochs < 2:
            return {"name": "learns", "ok": None, "seconds": None, "reason": "the check's learns_epochs is not set (>= 2)"}
        try:
            key, classes = self.learns_target()
            losses = [state["train_loss"]] + list(self.train_more(2, epochs))
            r = self.validate(epochs)
            print(self.metrics_line(epochs, epochs, dataclass_replace(r, train_loss=losses[-1]), {}), flush=True)
            state["final"] = (epochs, r)
        except Exception as e:
            traceback.print_exc()
            return {"name": "learns", "ok": False, "seconds": time.perf_counter() - t0, "error": f"{type(e).__name__}: {e}"[:2000]}
        # The verdict is the control plane's (runner/check.py): one place states the thresholds.
        return {"name": "learns", "ok": None, "verdict": "pending", "seconds": time.perf_counter() - t0,
                "detail": {"epochs": epochs, "metric": key, "value": r.metrics.get(key), "classes": classes, "train_loss": losses}}

    RELOAD_TOLERANCE = 1e-3
    """How far a prediction of the checkpoint loaded in a fresh process may be from the trained
    model's: each confidence and coordinate within 1e-3 (absolute, or relative to its size); labels,
    counts and captions equal."""
    RELOAD_CONF = 0.01
    """The lowest confidence of a prediction that the reload compares, for adapters with a threshold
    (ADAPTERS_PREDICT_CONF; Ultralytics' own default is 0.25)."""

    def reload_images(self, k: int = 4) -> list:
        """k fixed validation images (sorted by path), the check's sample image first."""
        first = Path(self.sample_image())
        root, images = first.parent, []
        for _ in range(3):
            images = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if len(images) >= k or root.parent == root:
                break
            root = root.parent
        return ([str(first)] + [i for i in images if i != str(first)])[:k]

    def _reload_check(self, epoch: int, result) -> dict:
        """The model at the end of training saved, loaded in a fresh process (`python -m adapters
        infer`, as `runner infer` loads a checkpoint) and asked for its predictions on fixed images:
        they must be this model's, within RELOAD_TOLERANCE. Raises where they are not."""
        import subprocess

        path = self.ckpt_dir / f"final{self.checkpoint_suffix}"
        self.save_checkpoint(path, epoch, result)
        images = self.reload_images()
        # Predictions down to a low confidence (adapters that have one read ADAPTERS_PREDICT_CONF): a
        # detector whose boxes on these images all score under its default 0.25 still has numbers to compare
        from unittest import mock

        with mock.patch.dict(os.environ, ADAPTERS_PREDICT_CONF=str(self.RELOAD_CONF)):
            here = [self.infer_single(i).as_dict() for i in images]
        root = str(Path(__file__).resolve().parent.parent)  # where the adapters package is
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               "ADAPTERS_PREDICT_CONF": str(self.RELOAD_CONF)}
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, "-m", "adapters", "infer", "--framework", self.framework, str(path), *images],
                               capture_output=True, text=True, env=env, timeout=3600)
        finally:
            seconds = time.perf_counter() - t0
            if not os.environ.get("RUNNER_CHECK_KEEP"):
                import shutil

                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if p.returncode != 0:
            tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the checkpoint did not load in a fresh process (exit {p.returncode}): {tail}")
        there = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
        worst = prediction_difference(here, there, self.RELOAD_TOLERANCE)
        return {"epoch": epoch, "images": len(images), "numbers": prediction_numbers(here), "tolerance": self.RELOAD_TOLERANCE,
                "max_difference": worst, "fresh_process_seconds": round(seconds, 3)}

    def param_count(self) -> int:
        return 0

    def sample_image(self) -> str:
        raise NotImplementedError


_TIMING = ("preprocess_ms", "inference_ms", "postprocess_ms", "image")


def prediction_difference(a, b, tol: float, where: str = "") -> float:
    """The largest difference between two predictions (InferenceResult dicts, or lists of them),
    each number's relative to its size where that is above 1; raises ValueError naming the first
    place where they differ by more than tol, or in a label, a count or a caption."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - set(_TIMING)
        worst = 0.0
        for k in sorted(keys):
            if k not in a or k not in b:
                raise ValueError(f"{where}{k}: present in one prediction only")
            worst = max(worst, prediction_difference(a[k], b[k], tol, f"{where}{k}."))
        return worst
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise ValueError(f"{where.rstrip('.')}: {len(a)} after training, {len(b)} reloaded")
        return max([prediction_difference(x, y, tol, f"{where}{i}.") for i, (x, y) in enumerate(zip(a, b))], default=0.0)
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        if a != b:
            raise ValueError(f"{where.rstrip('.')}: {a!r} after training, {b!r} reloaded")
        return 0.0
    d = abs(float(a) - float(b)) / max(1.0, abs(float(a)))
    if not d <= tol:  # (a NaN differs too)
        raise ValueError(f"{where.rstrip('.')}: {a!r} after training, {b!r} reloaded (difference {d:.3g} > {tol:g})")
    return d


def prediction_numbers(p) -> int:
    """How many numbers a prediction holds (confidences, coordinates, label ids; not its timings):
    what a reload comparison compared (0: no box, mask or label was predicted)."""
    if isinstance(p, dict):
        return sum(prediction_numbers(v) for k, v in p.items() if k not in _TIMING)
    if isinstance(p, list):
        return sum(prediction_numbers(v) for v in p)
    return int(isinstance(p, (int, float)) and not isinstance(p, bool))


def dataclass_replace(obj, **changes):
    from dataclasses import replace

    return replace(obj, **changes)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def bleu(refs: list[str], hyps: list[str], n: int = 4) -> float:
    """Corpus BLEU-n with add-one smoothing (enough to see captions improve on a tiny set), 0-100."""
    log_p, hyp_len, ref_len = 0.0, 0, 0
    for k in range(1, n + 1):
        match = total = 0
        for r, h in zip(refs, hyps):
            rt, ht = r.split(), h.split()
            rc = Counter(tuple(rt[i:i + k]) for i in range(len(rt) - k + 1))
            hc = Counter(tuple(ht[i:i + k]) for i in range(len(ht) - k + 1))
            match += sum(min(c, rc[g]) for g, c in hc.items())
            total += max(len(ht) - k + 1, 0)
        log_p += math.log((match + 1) / (total + 1)) / n
    for r, h in zip(refs, hyps):
        hyp_len += len(h.split())
        ref_len += len(r.split())
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return 100.0 * bp * math.exp(log_p)


def map50(preds: list, truth: list) -> float:
    """Mean over classes with ground truth of the all-point interpolated average precision at IoU
    0.5. preds[i]: (score, label, [x0, y0, x1, y1]) of image i; truth[i]: (label, box)."""
    classes = sorted({lb for t in truth for lb, _ in t})
    aps = []
    for c in classes:
        n_true = sum(lb == c for t in truth for lb, _ in t)
        dets = sorted(((sc, i, box) for i, p in enumerate(preds) for sc, lb, box in p if lb == c), key=lambda d: -d[0])
        used, tp = set(), []
        for _, i, box in dets:
            best, j_best = 0.5, None
            for j, (lb, tbox) in enumerate(truth[i]):
                if lb == c and (i, j) not in used and _iou(box, tbox) >= best:
                    best, j_best = _iou(box, tbox), j
            tp.append(j_best is not None)
            if j_best is not None:
                used.add((i, j_best))
        ap, hits, prec_at = 0.0, 0, []
        for k, hit in enumerate(tp, 1):
            hits += hit
            prec_at.append((hits / n_true, hits / k))
        # all-point interpolation: precision made monotone from the right, summed over recall steps
        best_p, prev_r = 0.0, 0.0
        envelope = []
        for r, p in reversed(prec_at):
            best_p = max(best_p, p)
            envelope.append((r, best_p))
        for r, p in reversed(envelope):
            ap += (r - prev_r) * p
            prev_r = r
        aps.append(ap)
    return sum(aps) / len(aps) if aps else 0.0


class StopGate:
    """SIGTERM ends training at once (SystemExit 143), except inside `held()`, where it waits for
    the block's end: an epoch's metrics line is never printed without its checkpoint saved."""

    def __init__(self):
        import signal

        self._held, self._pending = False, False
        try:
            signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:  # not the main thread (a test calling fit() from a thread): the default stays
            pass

    def _on_term(self, signum, frame):
        if self._held:
            self._pending = True
            return
        self._stop()

    @staticmethod
    def _stop():
        print("runner: stopped by SIGTERM; the last checkpoint holds every epoch printed", flush=True)
        raise SystemExit(143)

    @contextlib.contextmanager
    def held(self):
        self.hold()
        try:
            yield
        finally:
            self._held = False
        if self._pending:
            self._stop()

    def hold(self):
        """From here until release(), a SIGTERM waits (for a loop that is not ours: callbacks)."""
        self._held = True

    def release(self):
        self._held = False
        if self._pending:
            self._pending = False
            self._stop()


def main(argv=None) -> int:
    """python -m adapters run JOB.json | infer [--framework F] CHECKPOINT IMAGE... | schema FRAMEWORK"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(main.__doc__, file=sys.stderr)
        return 2
    verb, rest = argv[0], argv[1:]
    from . import load_adapter

    if verb == "schema":
        print(json.dumps(load_adapter(rest[0]).get_config_schema().as_dict(), indent=1))
        return 0
    if verb == "infer":
        framework = None
        if rest[:1] == ["--framework"]:
            framework, rest = rest[1], rest[2:]
        ckpt, images = rest[0], rest[1:]
        meta_path = Path(ckpt).with_suffix(".json") if Path(ckpt).is_file() else Path(ckpt) / "runner_meta.json"
        if framework is None:
            framework = json.loads(meta_path.read_text())["framework"] if meta_path.exists() else "timm"
        try:
            adapter = load_adapter(framework).from_checkpoint(ckpt)
        except BadConfig as e:  # e.g. a checkpoint that would run code when loaded: one line, no traceback
            print(f"runner: {e}", file=sys.stderr)
            return 2
        for img in images:
            print(json.dumps({"image": img, **adapter.infer_single(img).as_dict()}), flush=True)
        return 0
    if verb in ("run", "train"):
        cfg = json.loads(Path(rest[0]).read_text())
        if os.environ.get("RUNNER_RESUME_FROM") and not cfg.get("check"):  # a run after a preemption: its last checkpoint
            cfg["resume"] = os.environ["RUNNER_RESUME_FROM"]
        out = Path(cfg.get("output_dir") or ".")
        cls = load_adapter(cfg["framework"])
        try:
            adapter = cls(cfg)
            if cfg.get("check"):
                report = adapter.check()
                return 0 if report["status"] == "success" else 1
            return adapter.run_train()
        except BadConfig as e:
            print(f"runner: bad config: {e}", flush=True)
            write_json(out / "failure.json", {"reason": "bad_config", "message": str(e)})
            return 2
        except Exception as e:
            if is_oom(e):
                traceback.print_exc()
                write_json(out / "failure.json", {"reason": "oom", "message": str(e)[:2000]})
                return 1
            raise
    print(f"unknown verb {verb!r}; {main.__doc__}", file=sys.stderr)
    return 2
