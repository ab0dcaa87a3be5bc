"""Top-down keypoints for whole images with a ViTPose checkpoint: one JSON line per image,
{"image": path, "keypoints": [[x, y, score], ...], "box": [x1, y1, x2, y2]}. Each image is taken as
one person's box (the tiny check set has one per picture); the config is the one the checkpoint
was trained with (mmcv stores it in the checkpoint's meta). Shipped by runner's registry table.
"""

import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    import cv2
    import torch
    from mmcv import Config
    from mmpose.apis import inference_top_down_pose_model, init_pose_model

    meta = torch.load(a.checkpoint, map_location="cpu", weights_only=False).get("meta") or {}
    if not meta.get("config"):
        sys.exit(f"{a.checkpoint}: no config in the checkpoint's meta")
    cfg = Config.fromstring(meta["config"], ".py")
    cfg.data_cfg = cfg.data.test.data_cfg  # what the test set was read with (image and heatmap size)
    device = "cpu" if a.device == "cpu" or not torch.cuda.is_available() else f"cuda:{a.device.split(',')[0]}"
    model = init_pose_model(cfg, a.checkpoint, device=device)
    from mmpose.datasets import DatasetInfo

    info = DatasetInfo(cfg.data.test.dataset_info) if cfg.data.test.get("dataset_info") else None
    for image in a.images:
        h, w = cv2.imread(image).shape[:2]
        people, _ = inference_top_down_pose_model(model, image, [{"bbox": [0, 0, w, h]}], format="xywh", dataset_info=info)
        kps = people[0]["keypoints"].tolist() if people else []
        print(json.dumps({"image": os.path.abspath(image), "box": [0, 0, w, h], "keypoints": kps}), flush=True)


if __name__ == "__main__":
    main()
