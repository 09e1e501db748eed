"""Example training script run by the dcstore-train Job (mounted from a ConfigMap).

Streams an encrypted image dataset packed with ``dcstore pack`` (fields ``jpg`` and
``cls``) from the in-cluster store through the shared hot tier, and trains a small
model for a few epochs. Settings come from the pod's environment (dcstore itself
never reads the environment: the script passes values in).
"""

import io
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dcstore import ShardedDataset


def to_tensors(sample):
    image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB").resize((64, 64))
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    return pixels, int(bytes(sample["cls"]))


def main() -> None:
    ds = ShardedDataset(
        os.environ["DATASET_URL"],
        cache=os.environ["CACHE_URL"],
        keys=os.environ["KEYS_URL"],
        shuffle=True,
        seed=0,
    ).map(to_tensors)
    loader = DataLoader(ds, batch_size=128, num_workers=int(os.environ.get("WORKERS", "4")))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(1000),
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(int(os.environ.get("EPOCHS", "1"))):
        ds.set_epoch(epoch)
        for step, (images, labels) in enumerate(loader):
            logits = model(images.to(device).float() / 255)
            loss = torch.nn.functional.cross_entropy(logits, labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 100 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.3f}", flush=True)


if __name__ == "__main__":
    main()
