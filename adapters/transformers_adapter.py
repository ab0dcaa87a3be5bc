"""Hugging Face Transformers through the adapter contract: the Trainer runs the epochs, a
TrainerCallback (the plan's PlatformCallback) prints the platform's standard metrics line each
epoch and writes save_pretrained checkpoints (last, best)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import TrainerCallback, TrainingArguments, Trainer

from .base import BadConfig, InferenceResult, MetricsResult, TrainingAdapter, bleu, inject_oom, write_json  # noqa: F401 (bleu: here as before)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _config_class(model_type):
    from transformers import BlipConfig, DeiTConfig, DetrConfig, SegformerConfig, ViTConfig

    return {"vit": ViTConfig, "deit": DeiTConfig, "detr": DetrConfig, "segformer": SegformerConfig, "blip": BlipConfig}[model_type]


class PlatformCallback(TrainerCallback):
    """Bridges the Trainer to the platform: one `[metrics]` line per epoch, last/best checkpoints."""

    def __init__(self, adapter, gate=None):
        self.adapter = adapter
        self.train_loss = None
        self.gate = gate  # base.StopGate: a SIGTERM waits from an epoch's end to its Trainer checkpoint saved

    # The Trainer ends an epoch with on_epoch_end, evaluates (our metrics line), saves its own
    # checkpoint (what a run after a preemption resumes), then on_save: a stop in between would cut
    # that checkpoint mid-write, or leave a printed epoch that the resumed run trains again.
    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.gate is not None:
            self.gate.release()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.gate is not None:
            self.gate.hold()

    def on_save(self, args, state, control, **kwargs):
        if self.gate is not None:
            self.gate.release()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.train_loss = float(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        a = self.adapter
        epoch = max(1, int(round(state.epoch or 1)))
        extra = {k[len("eval_"):]: float(v) for k, v in (metrics or {}).items()
                 if k.startswith("eval_") and k not in ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
                                               "eval_model_preparation_time")}
        extra.update(a.extra_eval())
        result = MetricsResult(epoch=epoch, step=state.global_step, train_loss=self.train_loss,
                               val_loss=(metrics or {}).get("eval_loss"), metrics={f"val_{k}": v for k, v in extra.items()})
        lr = next((h["learning_rate"] for h in reversed(state.log_history) if "learning_rate" in h), None)
        print(a.metrics_line(epoch, a.epochs, result, {"lr": lr, "epoch_time": time.time() - a._epoch_t0}), flush=True)
        a._epoch_t0 = time.time()
        a.last_result = result
        if a.cfg.get("check"):
            return  # the plugin check saves and loads its own checkpoint
        a.save_checkpoint(a.ckpt_dir / "last", epoch, result)
        score = a.primary_metric(result)
        if a.best is None or score >= a.best:
            a.best = score
            a.save_checkpoint(a.ckpt_dir / "best", epoch, result)


class TransformersAdapter(TrainingAdapter):
    """ViT, DeiT, DETR, SegFormer, BLIP: classification, detection, segmentation, captioning."""

    framework = "transformers"
    checkpoint_suffix = ""  # save_pretrained folders

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.task = cfg.get("task")
        self.size = int(cfg.get("input_size") or 224)
        self.extra = cfg.get("extra") or {}
        self.device = torch.device("cuda" if cfg.get("device") == "cuda" and torch.cuda.is_available() else "cpu")
        self._epoch_t0 = time.time()
        torch.manual_seed(int(cfg.get("seed") or 0))

    # -- data ---------------------------------------------------------------------------------
    def prepare_dataset(self):
        ds = self.cfg["dataset"]
        root = Path(ds["path"])
        if self.task == "image_classification":
            from datasets import Dataset

            def folder(p):
                classes = sorted(d.name for d in p.iterdir() if d.is_dir())
                items = [(str(f), i) for i, c in enumerate(classes) for f in sorted((p / c).iterdir()) if f.suffix.lower() in IMAGE_EXTS]
                return classes, items
            if (root / "val").is_dir():
                self.labels, tr = folder(root / "train")
                _, va = folder(root / "val")
                self.train_ds = Dataset.from_dict({"image": [p for p, _ in tr], "label": [y for _, y in tr]})
                self.val_ds = Dataset.from_dict({"image": [p for p, _ in va], "label": [y for _, y in va]})
            else:  # a split when there is no val folder
                self.labels, items = folder(root / "train" if (root / "train").is_dir() else root)
                full = Dataset.from_dict({"image": [p for p, _ in items], "label": [y for _, y in items]})
                parts = full.train_test_split(test_size=float(ds.get("split") or 0.2), seed=int(self.cfg.get("seed") or 0))
                self.train_ds, self.val_ds = parts["train"], parts["test"]
        elif self.task == "object_detection":
            coco = json.loads(Path(ds["annotations"]).read_text())
            cats = sorted(coco["categories"], key=lambda c: c["id"])
            self.labels = [c["name"] for c in cats]
            index = {c["id"]: i for i, c in enumerate(cats)}
            anns = {}
            for a in coco["annotations"]:
                anns.setdefault(a["image_id"], []).append({**a, "category_id": index[a["category_id"]]})
            items = [{"path": str(root / im["file_name"]), "image_id": im["id"], "annotations": anns.get(im["id"], [])}
                     for im in sorted(coco["images"], key=lambda i: i["id"])]
            n_val = max(1, int(round(len(items) * float(ds.get("split") or 0.25))))
            self.train_ds, self.val_ds = items[:-n_val], items[-n_val:]
        elif self.task == "semantic_segmentation":
            self.labels = [l for l in (root / "classes.txt").read_text().splitlines() if l.strip()]
            pair = lambda s: [(str(p), str(root / s / "masks" / (p.stem + ".png"))) for p in sorted((root / s / "images").iterdir())]  # noqa: E731
            self.train_ds, self.val_ds = pair("train"), pair("val")
        elif self.task == "image_captioning":
            read = lambda s: [(str(root / s / r["image"]), r["caption"]) for r in map(json.loads, filter(str.strip, (root / s / "captions.jsonl").read_text().splitlines()))]  # noqa: E731
            self.train_ds, self.val_ds = read("train"), read("val")
            self.labels = []
        else:
            raise BadConfig(f"task: {self.task!r} is not a Transformers task here")
        if len(self.train_ds) == 0 or len(self.val_ds) == 0:
            raise BadConfig(f"dataset.path: {root} gives no training or no validation examples")

    # -- model ----------------------------------------------------------------------------------
    def _processor(self):
        s = self.size
        from transformers import (BlipImageProcessor, DeiTImageProcessor, DetrImageProcessor, SegformerImageProcessor,
                                  ViTImageProcessor)

        mt = self.cfg["model_type"]
        if mt == "vit":
            return ViTImageProcessor(size={"height": s, "width": s})
        if mt == "deit":
            return DeiTImageProcessor(size={"height": s, "width": s}, crop_size={"height": s, "width": s}, do_center_crop=False)
        if mt == "detr":
            return DetrImageProcessor(size={"shortest_edge": s, "longest_edge": s})
        if mt == "segformer":
            return SegformerImageProcessor(size={"height": s, "width": s}, do_reduce_labels=False)
        if mt == "blip":
            return BlipImageProcessor(size={"height": s, "width": s})
        raise BadConfig(f"model_type {mt!r} is not supported")

    def _tokenizer(self, out_dir: Path):
        """A word-level BERT tokenizer built from the training captions (no pretrained one offline)."""
        from transformers import BertTokenizer

        words = sorted({w for _, c in self.train_ds + self.val_ds for w in c.lower().split()})
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + words
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
        return BertTokenizer(str(out_dir / "vocab.txt"), do_lower_case=True, bos_token="[DEC]")

    def prepare_model(self):
        mt, name = self.cfg["model_type"], self.cfg["model_name"]
        self.processor = self._processor()
        if self.task == "image_captioning":
            self.tokenizer = self._tokenizer(self.out / "tokenizer")
        if self.cfg.get("pretrained"):
            self.model = self._from_pretrained(name)
        else:
            self.model = self._from_config(mt)
        if self.extra.get("gradient_checkpointing"):
            self.model.gradient_checkpointing_enable()
        self.model.to(self.device)

    def _from_config(self, mt):
        from transformers import (BlipForConditionalGeneration, DeiTForImageClassification, DetrForObjectDetection,
                                  SegformerForSemanticSegmentation, ViTForImageClassification)

        # the model's config, then its check table's `config` (settings of the check alone, e.g. no dropout
        # for a check that fits a fixed small set)
        over = {**(self.cfg.get("config_overrides") or {}), **(((self.cfg.get("check") or {}).get("sizes") or {}).get("config") or {})}
        n = len(self.labels)
        id2label = {i: l for i, l in enumerate(self.labels)}
        if mt in ("vit", "deit"):
            cfg = _config_class(mt)(image_size=self.size, num_labels=n, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **over)
            return (ViTForImageClassification if mt == "vit" else DeiTForImageClassification)(cfg)
        if mt == "detr":
            cfg = _config_class(mt)(num_labels=n, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **over)
            model = DetrForObjectDetection(cfg)
            # transformers 5.24 gives every nn.Embedding N(0, init_std=0.02), the object queries too; DETR's
            # own code leaves them at PyTorch's N(0, 1). At 0.02 the 100 queries are near-identical (their
            # decoder outputs differ by ~2e-4 at 64 px), so from scratch the model in eval mode gives one box
            # 100 times, while in training dropout's noise tells the queries apart for the matcher.
            torch.nn.init.normal_(model.model.query_position_embeddings.weight)
            return model
        if mt == "segformer":
            cfg = _config_class(mt)(num_labels=n, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **over)
            return SegformerForSemanticSegmentation(cfg)
        if mt == "blip":
            from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

            tok = self.tokenizer
            text = BlipTextConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id, **over.get("text", {}))
            vision = BlipVisionConfig(image_size=self.size, **over.get("vision", {}))
            return BlipForConditionalGeneration(BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict()))
        raise BadConfig(f"model_type {mt!r} is not supported")

    def _from_pretrained(self, name):
        from transformers import (AutoModelForImageClassification, AutoModelForObjectDetection, AutoModelForSemanticSegmentation,
                                  AutoProcessor, BlipForConditionalGeneration)

        n = len(self.labels)
        kw = {"num_labels": n, "ignore_mismatched_sizes": True} if n else {}
        if self.task == "image_captioning":
            proc = AutoProcessor.from_pretrained(name)
            self.tokenizer = proc.tokenizer
            return BlipForConditionalGeneration.from_pretrained(name)
        cls = {"image_classification": AutoModelForImageClassification, "object_detection": AutoModelForObjectDetection,
               "semantic_segmentation": AutoModelForSemanticSegmentation}[self.task]
        return cls.from_pretrained(name, **kw)

    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- batches ------------------------------------------------------------------------------
    def _collate(self, batch):
        p = self.processor
        if self.task == "image_classification":
            images = [Image.open(r["image"]).convert("RGB") for r in batch]
            out = p(images=images, return_tensors="pt")
            out["labels"] = torch.tensor([r["label"] for r in batch])
            return dict(out)
        if self.task == "object_detection":
            images = [Image.open(r["path"]).convert("RGB") for r in batch]
            ann = [{"image_id": r["image_id"], "annotations": r["annotations"]} for r in batch]
            out = p(images=images, annotations=ann, return_tensors="pt")
            return {"pixel_values": out["pixel_values"], "pixel_mask": out.get("pixel_mask"), "labels": out["labels"]}
        if self.task == "semantic_segmentation":
            images = [Image.open(i).convert("RGB") for i, _ in batch]
            masks = [Image.open(m) for _, m in batch]
            out = p(images=images, segmentation_maps=masks, return_tensors="pt")
            return {"pixel_values": out["pixel_values"], "labels": out["labels"].long()}
        if self.task == "image_captioning":
            images = [Image.open(i).convert("RGB") for i, _ in batch]
            pv = p(images=images, return_tensors="pt")["pixel_values"]
            tok = self.tokenizer([c for _, c in batch], padding="max_length", truncation=True,
                                 max_length=int(self.extra.get("max_caption_length", 16)), return_tensors="pt")
            ids = tok["input_ids"].clone()
            ids[:, 0] = self.tokenizer.bos_token_id  # BLIP decodes from its [DEC] token
            labels = ids.masked_fill(tok["attention_mask"] == 0, -100)
            return {"pixel_values": pv, "input_ids": ids, "attention_mask": tok["attention_mask"], "labels": labels}
        raise BadConfig(self.task)

    def _compute_metrics(self, pred):
        logits, labels = pred.predictions, pred.label_ids
        if self.task == "image_classification":
            logits = torch.as_tensor(logits[0] if isinstance(logits, tuple) else logits)
            y = torch.as_tensor(labels)
            k = min(5, logits.shape[-1])
            top = logits.topk(k, dim=-1).indices
            return {"accuracy": float((top[:, 0] == y).float().mean()), "top5": float((top == y[:, None]).any(-1).float().mean())}
        if self.task == "semantic_segmentation":
            logits = torch.as_tensor(logits[0] if isinstance(logits, tuple) else logits)
            y = torch.as_tensor(labels)
            up = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            ious = []
            for c in range(logits.shape[1]):
                inter = ((up == c) & (y == c)).sum().item()
                union = ((up == c) | (y == c)).sum().item()
                if union:
                    ious.append(inter / union)
            ious_fg = []
            for c in range(1, logits.shape[1]):  # class 0 is the background: a model that predicts only it scores 0 here
                union = ((up == c) | (y == c)).sum().item()
                if union:
                    ious_fg.append(((up == c) & (y == c)).sum().item() / union)
            return {"mean_iou": sum(ious) / max(len(ious), 1), "mean_iou_fg": sum(ious_fg) / max(len(ious_fg), 1),
                    "pixel_accuracy": float((up == y).float().mean())}
        return {}

    def extra_eval(self) -> dict:
        """Metrics the Trainer cannot compute by itself: BLEU of generated captions, box mAP@0.5."""
        if self.task == "object_detection":
            return {"map50": self._map50()}
        if self.task != "image_captioning":
            return {}
        refs, hyps = [caption.lower() for _, caption in self.val_ds], []
        self.model.eval()
        with torch.no_grad():  # a batch at a time: one generate per image took ~14 s of BLIP-base on 2 CPU cores
            for i in range(0, len(self.val_ds), self.batch_size):
                hyps += self._captions([path for path, _ in self.val_ds[i:i + self.batch_size]])
        self.sample_captions = list(zip(refs, hyps))[:3]
        return {"bleu": bleu(refs, hyps)}

    @torch.no_grad()
    def _map50(self) -> float:
        """Box mAP at IoU 0.5 over the validation images (all-point interpolated AP per class)."""
        from .base import map50

        self.model.eval()
        preds, truth = [], []
        for item in self.val_ds:
            img = Image.open(item["path"]).convert("RGB")
            pv = self.processor(images=img, return_tensors="pt")["pixel_values"].to(self.device)
            res = self.processor.post_process_object_detection(self.model(pixel_values=pv), threshold=0.0, target_sizes=[img.size[::-1]])[0]
            preds.append([(float(sc), int(lb), b) for sc, lb, b in zip(res["scores"].tolist(), res["labels"].tolist(), res["boxes"].tolist())])
            truth.append([(a["category_id"], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]])
                          for a in item["annotations"]])
        return map50(preds, truth)

    def _captions(self, paths) -> list:
        pv = self.processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"].to(self.device)
        ids = self.model.generate(pixel_values=pv, max_length=int(self.extra.get("max_caption_length", 16)))
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    def primary_metric(self, result):
        m = result.metrics
        for key in ("val_accuracy", "val_mean_iou", "val_bleu"):
            if key in m:
                return m[key]
        return -(result.val_loss or 0.0)

    # -- training -------------------------------------------------------------------------------
    def _args(self, epochs):
        ex = self.extra
        use_cpu = self.device.type != "cuda"
        return TrainingArguments(
            output_dir=str(self.out / "hf"), num_train_epochs=epochs, per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.batch_size, learning_rate=float(self.cfg["lr"]), optim=self.cfg.get("optimizer") or "adamw_torch",
            warmup_steps=float(ex.get("warmup_ratio", 0.0)), weight_decay=float(ex.get("weight_decay", 0.0)),
            adam_beta1=float(ex.get("adam_beta1", 0.9)), adam_beta2=float(ex.get("adam_beta2", 0.999)),
            gradient_accumulation_steps=int(ex.get("gradient_accumulation_steps", 1)), max_grad_norm=float(ex.get("max_grad_norm", 1.0)),
            # the check validates apart (its validate step is a real evaluation, timed on its own)
            eval_strategy="no" if self.cfg.get("check") else ex.get("eval_strategy", "epoch"), logging_strategy="epoch",
            save_strategy="no" if self.cfg.get("check") else ex.get("save_strategy", "epoch"),
            lr_scheduler_type=ex.get("lr_scheduler_type", "linear"), fp16=bool(ex.get("fp16")) and not use_cpu, bf16=bool(ex.get("bf16")),
            use_cpu=use_cpu, dataloader_num_workers=int(self.cfg.get("workers") or 0), remove_unused_columns=False,
            report_to="none", save_total_limit=2, seed=int(self.cfg.get("seed") or 0), disable_tqdm=True,
            label_names=["labels"],
        )

    def _trainer(self, epochs, gate=None):
        return Trainer(model=self.model, args=self._args(epochs), train_dataset=self.train_ds, eval_dataset=self.val_ds,
                       data_collator=self._collate, compute_metrics=self._compute_metrics if self.task in ("image_classification", "semantic_segmentation") else None,
                       callbacks=[PlatformCallback(self, gate)])

    def fit(self):
        from .base import StopGate

        inject_oom(self.batch_size)
        self._epoch_t0 = time.time()
        gate = StopGate()
        trainer = self._trainer(self.epochs, gate)
        resume = self.cfg.get("resume")
        if os.environ.get("RUNNER_RESTARTS", "0") != "0" and (not resume or os.environ.get("RUNNER_RESUME_FROM") == resume):
            # after a preemption: the Trainer's own last checkpoint (weights, optimizer, scheduler, epoch)
            from transformers.trainer_utils import get_last_checkpoint

            hf = self.out / "hf"
            resume = get_last_checkpoint(str(hf)) if hf.is_dir() else None
            if not resume:
                print("runner: no Trainer checkpoint to resume from; training from the start", flush=True)
        if resume:
            print(f"runner: resumed from {resume}", flush=True)
            self._load_weights(resume)
            trainer._load_from_checkpoint = lambda *a, **k: None  # (the weights are in: see _load_weights)
        try:
            trainer.train(resume_from_checkpoint=resume or None)
        finally:
            gate.release()
        return getattr(self, "last_result", None)

    def _load_weights(self, checkpoint: str):
        """The checkpoint's weights into the model, through from_pretrained. The Trainer's own
        resume loads model.safetensors as it is, but save_pretrained writes some models' weights
        under their older names (transformers 5: ViT's `encoder.layer.N.attention.attention.key` for
        `layers.N.attention.k_proj`), so it loaded none of their layers, said so in a warning, and
        trained on from random weights; from_pretrained maps the names. The optimizer, scheduler and
        step still come from the Trainer's checkpoint."""
        loaded = type(self.model).from_pretrained(checkpoint)
        self.model.load_state_dict(loaded.state_dict())  # strict: a checkpoint of another shape fails here, loudly
        del loaded

    def train_epoch(self, epoch: int) -> float:
        return self.train_more(epoch, epoch)[-1]

    def train_more(self, first: int, last: int) -> list:
        """One Trainer run of epochs first..last (one schedule); the training loss of each epoch."""
        self._epoch_t0 = time.time()
        self.trainer = self._trainer(last - first + 1)
        out = self.trainer.train()
        losses = [float(h["loss"]) for h in self.trainer.state.log_history if "loss" in h]
        return losses or [float(out.training_loss)]

    def validate(self, epoch: int) -> MetricsResult:
        """A real evaluation of the current weights on the validation set (the callback builds the
        result and prints its metrics line)."""
        self.last_result = None
        trainer = Trainer(model=self.model, args=self._args(1), eval_dataset=self.val_ds, data_collator=self._collate,
                          compute_metrics=self._compute_metrics if self.task in ("image_classification", "semantic_segmentation") else None,
                          callbacks=[PlatformCallback(self)])
        trainer.evaluate()
        self.last_result.epoch = epoch
        return self.last_result

    def learns_target(self):
        return {"image_classification": ("val_accuracy", len(self.labels)), "semantic_segmentation": ("val_mean_iou_fg", None),
                "object_detection": ("val_map50", None), "image_captioning": ("val_bleu", None)}[self.task]

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, path: Path, epoch: int, result: MetricsResult):
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        self.model.save_pretrained(tmp)
        self.processor.save_pretrained(tmp)
        if getattr(self, "tokenizer", None) is not None:
            self.tokenizer.save_pretrained(tmp)
        write_json(tmp / "runner_meta.json", {"framework": "transformers", "task": self.task, "model_type": self.cfg["model_type"],
                                              "epoch": epoch, "labels": self.labels, "input_size": self.size,
                                              "metrics": result.metrics if result else {}})
        if path.exists():
            import shutil

            shutil.rmtree(path)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> int:
        path = Path(path)
        self.model = type(self.model).from_pretrained(path).to(self.device)
        return json.loads((path / "runner_meta.json").read_text())["epoch"]

    @classmethod
    def from_checkpoint(cls, path) -> "TransformersAdapter":
        path = Path(path)
        if path.is_file():
            path = path.parent
        meta = json.loads((path / "runner_meta.json").read_text())
        self = cls({"framework": "transformers", "task": meta["task"], "model_type": meta["model_type"], "input_size": meta["input_size"],
                    "output_dir": os.environ.get("TMPDIR", "/tmp"), "lr": 1e-4})
        self.labels = meta["labels"]
        from transformers import (AutoImageProcessor, BertTokenizer, BlipForConditionalGeneration, DeiTForImageClassification,
                                  DetrForObjectDetection, SegformerForSemanticSegmentation, ViTForImageClassification)

        cls_ = {"vit": ViTForImageClassification, "deit": DeiTForImageClassification, "detr": DetrForObjectDetection,
                "segformer": SegformerForSemanticSegmentation, "blip": BlipForConditionalGeneration}[meta["model_type"]]
        self.model = cls_.from_pretrained(path).to(self.device).eval()
        self.processor = AutoImageProcessor.from_pretrained(path)
        if meta["task"] == "image_captioning":
            self.tokenizer = BertTokenizer.from_pretrained(path)
        return self

    # -- inference -------------------------------------------------------------------------------
    def preprocess_image(self, image_path: str):
        img = Image.open(image_path).convert("RGB")
        return img, self.processor(images=img, return_tensors="pt")["pixel_values"].to(self.device)

    @torch.no_grad()
    def infer_single(self, image_path: str) -> InferenceResult:
        t0 = time.perf_counter()
        img, pv = self.preprocess_image(image_path)
        t1 = time.perf_counter()
        self.model.eval()
        if self.task == "image_captioning":
            ids = self.model.generate(pixel_values=pv, max_length=int(self.extra.get("max_caption_length", 16)))
            t2 = time.perf_counter()
            text = self.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
            return InferenceResult(task=self.task, caption=text, preprocess_ms=(t1 - t0) * 1e3, inference_ms=(t2 - t1) * 1e3,
                                   postprocess_ms=(time.perf_counter() - t2) * 1e3)
        out = self.model(pixel_values=pv)
        t2 = time.perf_counter()
        r = InferenceResult(task=self.task, preprocess_ms=(t1 - t0) * 1e3, inference_ms=(t2 - t1) * 1e3)
        if self.task == "image_classification":
            probs = out.logits.softmax(-1)[0]
            conf, idx = probs.topk(min(5, probs.numel()))
            r.top5_predictions = [{"label_id": int(i), "label": self.labels[int(i)], "confidence": float(c)} for c, i in zip(conf, idx)]
            r.predicted_label_id, r.predicted_label, r.confidence = int(idx[0]), self.labels[int(idx[0])], float(conf[0])
        elif self.task == "object_detection":
            res = self.processor.post_process_object_detection(out, threshold=0.0, target_sizes=[img.size[::-1]])[0]
            order = res["scores"].argsort(descending=True)[:10]
            r.boxes = [{"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "confidence": float(s), "label_id": int(l),
                        "label": self.labels[int(l)] if int(l) < len(self.labels) else "no-object"}
                       for b, s, l in zip(res["boxes"][order].tolist(), res["scores"][order], res["labels"][order])]
        elif self.task == "semantic_segmentation":
            seg = self.processor.post_process_semantic_segmentation(out, target_sizes=[img.size[::-1]])[0]
            counts = torch.bincount(seg.flatten(), minlength=len(self.labels))
            r.masks = [{"label_id": i, "label": self.labels[i], "pixels": int(c), "fraction": float(c) / seg.numel()}
                       for i, c in enumerate(counts.tolist()) if c]
        r.postprocess_ms = (time.perf_counter() - t2) * 1e3
        return r

    def sample_image(self) -> str:
        first = self.val_ds[0]
        if isinstance(first, dict):
            return first.get("image") or first.get("path")
        return first[0]

    def check(self) -> dict:
        """The plugin check: the Trainer's one epoch is 'train', its evaluation is 'validate'."""
        return super().check()
