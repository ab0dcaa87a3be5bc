"""timm image classification through the adapter contract."""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from .base import BadConfig, InferenceResult, MetricsResult, TrainingAdapter, inject_oom, write_json


def load_weights(path, device):
    """A checkpoint as plain data (tensors, numbers, strings, lists, dicts): torch.load with
    weights_only=True, so a file that needs code to load (a pickle of objects, which could be
    anything its author wrote) is refused, never run, whoever loads it."""
    import pickle

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise BadConfig(f"{path}: not a plain checkpoint (tensors, numbers, strings, lists, dicts): "
                        "loading it would run code, so it is refused") from None


def _optimizer(name, params, lr, wd, momentum):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=wd)
    raise BadConfig(f"optimizer: given {name!r}; expected sgd, adam, adamw or rmsprop")


class TimmAdapter(TrainingAdapter):
    """Any timm model on an ImageFolder dataset."""

    framework = "timm"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.extra = cfg.get("extra") or {}
        self.device = torch.device(cfg.get("device", "cpu") if torch.cuda.is_available() or cfg.get("device") == "cpu" else "cpu")
        self.input_size = int(cfg.get("input_size") or 224)
        self.classes = cfg.get("classes")
        torch.manual_seed(int(cfg.get("seed") or 0))
        random.seed(int(cfg.get("seed") or 0))

    # -- model ------------------------------------------------------------------------------
    def _create(self, num_classes):
        kwargs = {"pretrained": bool(self.cfg.get("pretrained")), "num_classes": num_classes,
                  "drop_rate": float(self.extra.get("drop_rate") or 0.0)}
        for key in self.cfg.get("create_kwargs_from_input", []):
            kwargs[key] = self.input_size
        try:
            model = timm.create_model(self.cfg["model_name"], **kwargs)
        except RuntimeError as e:
            if "Unknown model" in str(e):
                raise BadConfig(f"model: timm does not know {self.cfg['model_name']!r}") from None
            raise
        fresh_head = not kwargs["pretrained"] or num_classes != (getattr(model, "pretrained_cfg", None) or {}).get("num_classes", 1000)
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if fresh_head and isinstance(head, torch.nn.Linear):
            # A new classifier starts at PyTorch's fan-in scale, U(+-1/sqrt(in_features)), whatever the
            # model's own init: timm's TensorFlow-style one (EfficientNet, MobileNetV3, MixNet, MnasNet...)
            # scales it by fan-out, 1/sqrt(classes), sized for 1000 classes. With 3 it is 18 times too
            # wide: first logits of spread ~7, a first epoch's loss of 6-14 (ln 3 = 1.1), and from
            # scratch EfficientNet-B0 fitted 0.72 of its training images in 12 epochs (fan-in head: 0.89).
            head.reset_parameters()
        return model

    def prepare_model(self):
        self.model = self._create(len(self.classes)).to(self.device)
        dc = timm.data.resolve_data_config({}, model=self.model)
        self.mean, self.std = list(dc["mean"]), list(dc["std"])
        self._build_transforms()
        ex = self.extra
        self.optimizer = _optimizer(self.cfg.get("optimizer") or "adamw", self.model.parameters(), float(self.cfg["lr"]),
                                    float(ex.get("weight_decay", 0.05)), float(ex.get("momentum", 0.9)))
        self.base_lr = float(self.cfg["lr"])
        self.step = 0

    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def current_lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def _lr_at(self, epoch):
        ex = self.extra
        warm = int(ex.get("warmup_epochs") or 0)
        if epoch <= warm:
            return self.base_lr * epoch / (warm + 1)
        sched = ex.get("scheduler", "cosine")
        if sched == "cosine" and self.epochs > 1:
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / self.epochs))
        if sched == "step":
            return self.base_lr * (0.1 ** ((epoch - 1) // max(1, self.epochs // 3)))
        return self.base_lr

    # -- data ---------------------------------------------------------------------------------
    def _build_transforms(self):
        """Resize + normalise with the model's own mean/std (timm's pretrained config)."""
        s = self.input_size
        norm = transforms.Normalize(self.mean, self.std)
        self.t_train = transforms.Compose([transforms.Resize((s, s)), transforms.RandomHorizontalFlip(float(self.extra.get("hflip", 0.5))),
                                           transforms.ToTensor(), norm])
        self.t_eval = transforms.Compose([transforms.Resize((s, s)), transforms.ToTensor(), norm])
        if hasattr(self, "train_base"):
            self.train_base.transform = self.t_train
            self.val_base.transform = self.t_eval

    def prepare_dataset(self):
        ds = self.cfg["dataset"]
        root = Path(ds["path"])
        if (root / "train").is_dir():
            self.train_base = datasets.ImageFolder(root / "train")
            if (root / "val").is_dir():
                self.val_base = datasets.ImageFolder(root / "val")
                if self.val_base.classes != self.train_base.classes:
                    # val may lack a class: map by name onto train's indexes
                    idx = {c: i for i, c in enumerate(self.train_base.classes)}
                    self.val_base.samples = [(p, idx[self.val_base.classes[y]]) for p, y in self.val_base.samples]
                    self.val_base.targets = [y for _, y in self.val_base.samples]
                train_idx, val_idx = list(range(len(self.train_base))), list(range(len(self.val_base)))
            else:
                self.val_base = datasets.ImageFolder(root / "train")
                train_idx, val_idx = self._split(len(self.train_base), float(ds.get("split") or 0.2))
        else:
            self.train_base = datasets.ImageFolder(root)
            self.val_base = datasets.ImageFolder(root)
            train_idx, val_idx = self._split(len(self.train_base), float(ds.get("split") or 0.2))
        self.classes = self.train_base.classes
        self.train_set = Subset(self.train_base, train_idx)
        self.val_set = Subset(self.val_base, val_idx)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise BadConfig(f"dataset.path: {root} gives {len(self.train_set)} training and {len(self.val_set)} validation images; both must be > 0")
    def _split(self, n, frac):
        idx = list(range(n))
        random.Random(int(self.cfg.get("seed") or 0)).shuffle(idx)
        k = max(1, int(round(n * frac)))
        return sorted(idx[k:]), sorted(idx[:k])

    def _loader(self, ds, shuffle):
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=int(self.cfg.get("workers") or 0),
                          drop_last=False, pin_memory=self.device.type == "cuda")

    # -- train / validate -------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        inject_oom(self.batch_size)
        for g in self.optimizer.param_groups:
            g["lr"] = self._lr_at(epoch)
        self.model.train()
        loader = self._loader(self.train_set, True)
        total, n = 0.0, 0
        smoothing = float(self.extra.get("label_smoothing") or 0.0)
        clip = self.extra.get("grad_clip")
        cap = self.extra.get("max_steps_per_epoch")
        steps = len(loader) if not cap else min(len(loader), int(cap))
        for i, (x, y) in enumerate(loader, 1):
            x, y = x.to(self.device), y.to(self.device)
            if x.shape[0] == 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
                x, y = torch.cat([x, x]), torch.cat([y, y])  # BatchNorm needs two samples in training
            loss = F.cross_entropy(self.model(x), y, label_smoothing=smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
            self.optimizer.step()
            self.step += 1
            total += loss.item() * x.shape[0]
            n += x.shape[0]
            end = "\n" if i == steps else "\r"
            print(f"[train] epoch={epoch}/{self.epochs} step={i}/{steps} loss={loss.item():.4f} lr={self.current_lr():.6g}", end=end, flush=True)
            if cap and i >= steps:
                break
        if not math.isfinite(total):
            print("runner: training loss is not finite (lower lr?)", flush=True)
        return total / max(n, 1)

    @torch.no_grad()
    def recalibrate_bn(self) -> bool:
        """Precise BatchNorm: recompute every BatchNorm layer's running mean and variance as the
        average over the training images under the current weights (train transforms, no labels, no
        gradients), in place of the moving average of the last ~10 steps, which trails weights that
        still move fast and on small batches is noisy. True if the model has BatchNorm."""
        bns = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not bns:
            return False
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches seen
        self.model.train()
        for x, _ in self._loader(self.train_set, True):  # shuffled, as in training: a batch of one class lacks the spread between classes
            if x.shape[0] > 1:
                self.model(x.to(self.device))
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        return True

    @torch.no_grad()
    def validate(self, epoch: int) -> MetricsResult:
        if self.extra.get("precise_bn"):
            self.recalibrate_bn()
        self.model.eval()
        total, n, top1, top5 = 0.0, 0, 0, 0
        k = min(5, len(self.classes))
        for x, y in self._loader(self.val_set, False):
            x, y = x.to(self.device), y.to(self.device)
            out = self.model(x)
            total += F.cross_entropy(out, y, reduction="sum").item()
            pred = out.topk(k, dim=1).indices
            top1 += (pred[:, 0] == y).sum().item()
            top5 += (pred == y[:, None]).any(dim=1).sum().item()
            n += x.shape[0]
        return MetricsResult(epoch=epoch, step=self.step, val_loss=total / max(n, 1),
                             metrics={"val_top1": 100.0 * top1 / max(n, 1), "val_top5": 100.0 * top5 / max(n, 1),
                                      "val_accuracy": top1 / max(n, 1)})

    def primary_metric(self, result):
        return result.metrics["val_top1"] - 1e-6 * (result.val_loss or 0)

    def learns_target(self):
        return "val_accuracy", len(self.classes)

    # -- checkpoints ----------------------------------------------------------------------------
    def _meta(self, epoch, result=None):
        return {"framework": "timm", "model_name": self.cfg["model_name"], "classes": list(self.classes), "epoch": epoch,
                "input_size": self.input_size, "mean": self.mean, "std": self.std,
                "create_kwargs_from_input": self.cfg.get("create_kwargs_from_input", []),
                "metrics": (result.metrics if result else {}), "val_loss": result.val_loss if result else None}

    def save_checkpoint(self, path: Path, epoch: int, result: MetricsResult):
        """Tensors, numbers, strings, lists and dicts only, so that it loads with weights_only=True."""
        meta = json.loads(json.dumps(self._meta(epoch, result), default=float))  # plain types (no numpy scalars)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "meta": meta,
                    "step": int(self.step)}, tmp)
        os.replace(tmp, path)
        write_json(path.with_suffix(".json"), meta)

    def load_checkpoint(self, path: Path) -> int:
        ckpt = load_weights(path, self.device)
        if list(ckpt["meta"]["classes"]) != list(self.classes):
            raise BadConfig(f"resume: {path} was trained on classes {ckpt['meta']['classes']}, the dataset has {self.classes}")
        self.model.load_state_dict(ckpt["model"])
        if "optimizer" in ckpt and hasattr(self, "optimizer"):
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = ckpt.get("step", 0)
        return int(ckpt["meta"]["epoch"])

    @classmethod
    def from_checkpoint(cls, path) -> "TimmAdapter":
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        cfg = {"framework": "timm", "model_name": meta["model_name"], "input_size": meta["input_size"], "classes": meta["classes"],
               "create_kwargs_from_input": meta.get("create_kwargs_from_input", []), "output_dir": os.environ.get("TMPDIR", "/tmp"),
               "device": "cuda" if torch.cuda.is_available() else "cpu", "lr": 1e-3}
        self = cls(cfg)
        self.model = self._create(len(meta["classes"])).to(self.device)
        ckpt = load_weights(path, self.device)
        self.model.load_state_dict(ckpt["model"])
        self.mean, self.std = meta["mean"], meta["std"]
        self.t_eval = transforms.Compose([transforms.Resize((self.input_size, self.input_size)), transforms.ToTensor(),
                                          transforms.Normalize(self.mean, self.std)])
        return self

    # -- inference -------------------------------------------------------------------------------
    def preprocess_image(self, image_path: str):
        from PIL import Image

        with Image.open(image_path) as im:
            return self.t_eval(im.convert("RGB")).unsqueeze(0).to(self.device)

    @torch.no_grad()
    def infer_single(self, image_path: str) -> InferenceResult:
        t0 = time.perf_counter()
        x = self.preprocess_image(image_path)
        t1 = time.perf_counter()
        self.model.eval()
        logits = self.model(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        probs = logits.softmax(dim=1)[0]
        k = min(5, probs.numel())
        conf, idx = probs.topk(k)
        top5 = [{"label_id": int(i), "label": self.classes[int(i)], "confidence": float(c)} for c, i in zip(conf, idx)]
        t3 = time.perf_counter()
        return InferenceResult(task="image_classification", predicted_label_id=top5[0]["label_id"], predicted_label=top5[0]["label"],
                               confidence=top5[0]["confidence"], top5_predictions=top5, preprocess_ms=(t1 - t0) * 1e3,
                               inference_ms=(t2 - t1) * 1e3, postprocess_ms=(t3 - t2) * 1e3)

    def sample_image(self) -> str:
        return self.val_base.samples[self.val_set.indices[0]][0]
