"""Classify images with a checkpoint of ConvNeXt's main.py: one JSON line per image,
{"image", "label_id", "confidence", "scores"} (label ids index the sorted class folders, as
torchvision's ImageFolder numbers them in training). The model is built as main.py builds it and
the image prepared as its evaluation transform does (resize by 256/224 and centre crop, a warp at 384 and up;
ImageNet mean and std). Shipped by runner's registry table (`files`); the repo has no predict script.
"""

import argparse
import json
import os

import torch
from PIL import Image
from timm.models import create_model
from torchvision import transforms

import models.convnext  # noqa: F401  (registers the ConvNeXt models with timm)
import models.convnext_isotropic  # noqa: F401


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--nb_classes", type=int, required=True)
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("images", nargs="+")
    a = p.parse_args()
    model = create_model(a.model, pretrained=False, num_classes=a.nb_classes)
    state = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state.get("model", state))
    model.eval()
    size = a.input_size
    bicubic = transforms.InterpolationMode.BICUBIC
    if size >= 384:  # main.py's evaluation transform: warp at 384 and up, else resize by 256/224 and crop
        prep = [transforms.Resize((size, size), interpolation=bicubic)]
    else:
        prep = [transforms.Resize(int(size / (224 / 256)), interpolation=bicubic), transforms.CenterCrop(size)]
    tf = transforms.Compose(prep + [transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with torch.no_grad():
        for path in a.images:
            x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
            probs = model(x).softmax(-1)[0]
            k = int(probs.argmax())
            print(json.dumps({"image": os.path.abspath(path), "label_id": k, "confidence": float(probs[k]),
                              "scores": [round(float(v), 6) for v in probs]}), flush=True)


if __name__ == "__main__":
    main()
