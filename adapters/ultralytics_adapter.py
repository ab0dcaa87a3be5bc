"""Ultralytics YOLO through the adapter contract.

Ultralytics runs its own epoch loop (and prints its own tables, which the registry's parser
reads), so this adapter drives `YOLO.train` for a whole run and maps its results, checkpoints
and predictions onto the contract.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

# Offline by construction: no hub, no font or AMP-check downloads, no settings sync.
os.environ.setdefault("YOLO_OFFLINE", "1")

from ultralytics import YOLO  # noqa: E402

from .base import BadConfig, InferenceResult, MetricsResult, TrainingAdapter, inject_oom, write_json  # noqa: E402


def finished(path) -> str:
    """Why the Ultralytics checkpoint at path holds a finished training ("" when it does not).

    Ultralytics saves last.pt after each epoch and, once the last epoch is trained, strips its
    optimizer (epoch -1) before its final validation: a run stopped in between would be asked to
    resume a training that has nothing left, which Ultralytics refuses ("nothing to resume") or,
    for a stripped file, answers with a new training of its default 100 epochs."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # the job's own file, in the job's process
    epoch = ckpt.get("epoch", -1) if isinstance(ckpt, dict) else -1
    total = ((ckpt.get("train_args") or {}).get("epochs") if isinstance(ckpt, dict) else None) or 0
    if epoch is None or epoch < 0 or ckpt.get("optimizer") is None:
        return "its optimizer stripped after the last epoch"
    if total and epoch + 1 >= total:
        return f"epoch {epoch + 1} of {total}"
    return ""


class UltralyticsAdapter(TrainingAdapter):
    """Any Ultralytics model: detect, segment, pose, obb, classify."""

    framework = "ultralytics"
    checkpoint_suffix = ".pt"  # YOLO() refuses any other

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.args = dict(cfg.get("train_args") or {})
        self.batch_size = int(self.args.get("batch", 16))
        if str(self.args.get("device", "cpu")) != "cpu":
            import torch

            if not torch.cuda.is_available():  # as the timm adapter does: say so, and train on the CPU
                print(f"runner: warning: GPU(s) {self.args['device']} granted, but torch sees no CUDA device "
                      f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}); training on the CPU", flush=True)
                self.args["device"] = "cpu"

    def prepare_model(self):
        src = self.cfg["model_source"]
        try:
            self.model = YOLO(src, task=self.cfg.get("yolo_task"))
        except FileNotFoundError as e:
            raise BadConfig(f"model: {src}: {e}") from None
        return self.model

    def prepare_dataset(self):
        if self.cfg.get("crops"):
            from .crop import run

            print(f"runner: cut {run(self.cfg['crops'])} tiles of the dataset", flush=True)
        data = self.args.get("data")
        if not data or not Path(data).exists():
            raise BadConfig(f"dataset.path: {data} does not exist")

    def _train(self, gate=None, **override):
        args = {**self.args, **override}
        if self.cfg.get("resume"):
            done = finished(self.cfg["resume"])
            if done:  # stopped after its last epoch (its final validation, its own wrap-up): nothing to train
                print(f"runner: {self.cfg['resume']} holds a finished training ({done}); nothing left to train", flush=True)
                self.model = YOLO(self.cfg["resume"])
                return None
            self.model = YOLO(self.cfg["resume"])
            # Ultralytics resumes with the checkpoint's own settings; `data` is what it falls back to
            # when the checkpoint's data path is gone (without it: its default, coco8, a download)
            args = {"resume": True, **{k: args[k] for k in ("device", "workers", "batch", "data") if k in args}}
        if gate is not None:
            # SIGTERM (a preemption) waits from an epoch's end to its last.pt saved: Ultralytics prints
            # the epoch's validation before it saves, and a run resumed from the previous last.pt would
            # train (and print) that epoch again
            self.model.add_callback("on_train_epoch_start", lambda trainer: gate.release())
            self.model.add_callback("on_train_epoch_end", lambda trainer: gate.hold())
            self.model.add_callback("on_fit_epoch_end", lambda trainer: gate.release())
        inject_oom(int(args.get("batch") or 0))
        try:
            results = self.model.train(**args)
        finally:
            if gate is not None:
                gate.release()
        self.trainer = self.model.trainer
        return results

    def fit(self):
        """Ultralytics runs its own epochs; the OOM policy is the base class's run_train. If it
        stops for a SIGTERM, its last.pt holds every epoch it printed (RUNNER_RESUME_FROM resumes it)."""
        from .base import StopGate

        self._train(gate=StopGate())

    def with_batch_size(self, n: int) -> dict:
        return dict(self.cfg, train_args={**self.args, "batch": n})

    # -- the contract's pieces, used by `check` ------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        return self.train_more(epoch, epoch)[-1]

    def train_more(self, first: int, last: int) -> list:
        """One YOLO.train of epochs first..last from the current weights (no warm-up: a check's few
        epochs would be all warm-up), validating only at its end, as Ultralytics always does."""
        self._train(epochs=last - first + 1, val=False, warmup_epochs=0)
        import csv

        # The run's own results.csv: the sum of its train/* losses for each epoch.
        rows = list(csv.DictReader((Path(self.trainer.save_dir) / "results.csv").read_text().splitlines()))
        rows = rows[-(last - first + 1):]  # this run's epochs (the folder is reused: exist_ok)
        return [sum(float(v) for k, v in row.items() if k.strip().startswith("train/")) for row in rows]

    MAIN_METRIC = {"detect": "val_map50_box", "segment": "val_map50_mask", "pose": "val_map50_pose", "obb": "val_map50_box",
                   "classify": "val_accuracy_top1"}

    def learns_target(self):
        task = self.model.task
        return self.MAIN_METRIC[task], (len(self.model.names) if task == "classify" else None)

    def validate(self, epoch: int) -> MetricsResult:
        weights = Path(self.trainer.save_dir) / "weights" / "last.pt"
        m = YOLO(str(weights))
        metrics = m.val(data=self.args["data"], imgsz=self.args["imgsz"], batch=self.args["batch"], device=self.args["device"],
                        workers=0, plots=False, verbose=False, project=str(self.out / "runs"), name="val", exist_ok=True)
        rd = {k.replace("metrics/", "val_").replace("(B)", "_box").replace("(M)", "_mask").replace("(P)", "_pose")
              .replace("-", "_").lower(): float(v) for k, v in metrics.results_dict.items()}
        return MetricsResult(epoch=epoch, metrics=rd)

    def save_checkpoint(self, path: Path, epoch: int, result: MetricsResult):
        src = Path(self.trainer.save_dir) / "weights" / "last.pt"
        shutil.copyfile(src, path)
        write_json(path.with_suffix(".json"), {"framework": "ultralytics", "epoch": epoch, "task": self.cfg.get("yolo_task"),
                                               "metrics": result.metrics})

    def load_checkpoint(self, path: Path) -> int:
        self.model = YOLO(str(path))
        return json.loads(path.with_suffix(".json").read_text()).get("epoch", 0) if path.with_suffix(".json").exists() else 0

    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.model.parameters())

    def sample_image(self) -> str:
        data = Path(self.args["data"])
        if data.is_dir():  # classification: an ImageFolder
            return str(next(p for p in sorted((data / "val").rglob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg")))
        import yaml

        cfg = yaml.safe_load(data.read_text())
        root = Path(cfg.get("path") or data.parent)
        return str(next(p for p in sorted((root / cfg["val"]).iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg")))

    @classmethod
    def from_checkpoint(cls, path) -> "UltralyticsAdapter":
        self = cls({"framework": "ultralytics", "output_dir": os.environ.get("TMPDIR", "/tmp")})
        self.model = YOLO(str(path))
        return self

    def preprocess_image(self, image_path: str):
        return image_path  # Ultralytics letterboxes inside predict(); its own timing is reported

    def infer_single(self, image_path: str) -> InferenceResult:
        t0 = time.perf_counter()
        conf = {"conf": float(os.environ["ADAPTERS_PREDICT_CONF"])} if os.environ.get("ADAPTERS_PREDICT_CONF") else {}  # (the reload check's)
        r = self.model.predict(self.preprocess_image(image_path), verbose=False, device="cpu" if not os.environ.get("CUDA_VISIBLE_DEVICES") else None,
                               **conf)[0]
        wall = (time.perf_counter() - t0) * 1e3
        names = r.names
        sp = r.speed or {}
        out = InferenceResult(task=self.model.task, preprocess_ms=sp.get("preprocess", 0.0), inference_ms=sp.get("inference", wall),
                              postprocess_ms=sp.get("postprocess", 0.0))
        if r.probs is not None:
            top = r.probs.top5
            confs = r.probs.top5conf.tolist()
            out.top5_predictions = [{"label_id": int(i), "label": names[int(i)], "confidence": float(c)} for i, c in zip(top, confs)]
            out.predicted_label_id, out.predicted_label, out.confidence = int(top[0]), names[int(top[0])], float(confs[0])
            out.task = "image_classification"
            return out
        if r.obb is not None:
            out.task = "obb_detection"
            out.rotated_boxes = [{"cx": b[0], "cy": b[1], "w": b[2], "h": b[3], "angle": b[4], "confidence": float(c), "label_id": int(k),
                                  "label": names[int(k)]} for b, c, k in zip(r.obb.xywhr.tolist(), r.obb.conf.tolist(), r.obb.cls.tolist())]
            return out
        if r.boxes is not None:
            out.task = {"segment": "instance_segmentation", "pose": "pose_estimation"}.get(self.model.task, "object_detection")
            out.boxes = [{"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "confidence": float(c), "label_id": int(k), "label": names[int(k)]}
                         for b, c, k in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist())]
        if r.masks is not None:
            out.masks = [{"polygon": [[round(x, 2), round(y, 2)] for x, y in poly.tolist()]} for poly in r.masks.xy]
        if r.keypoints is not None:
            conf = r.keypoints.conf.tolist() if r.keypoints.conf is not None else None
            out.keypoints = [[{"x": p[0], "y": p[1], **({"confidence": conf[i][j]} if conf else {})} for j, p in enumerate(kps)]
                             for i, kps in enumerate(r.keypoints.xy.tolist())]
        return out

    def check(self) -> dict:
        """The plugin check (train one epoch without its own validation, then validate apart)."""
        self.args.update({"epochs": 1})
        return super().check()
