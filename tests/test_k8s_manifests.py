"""Kubernetes manifests (k8s/): every kustomization renders with the real ``kustomize``
and validates against the Kubernetes API schemas offline; pods meet the restricted
Pod Security profile's intent (non-root, no privilege escalation, read-only root
filesystem, all capabilities dropped), pin their images to the versions the tests run
and request resources; and the example training script trains on a real dataset."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
KUBERNETES_VERSION = "1.31"
KUSTOMIZATIONS = ["base", "overlays/memcached", "overlays/production"]
PINNED_IMAGES = {"redis": "7.0.15", "memcached": "1.6.18", "dcstore": "0.1.0"}


def kustomize() -> str:
    found = shutil.which("kustomize") or str(REPO / ".tools" / "bin" / "kustomize")
    if not os.access(found, os.X_OK):
        if os.environ.get("DCSTORE_REQUIRE_SERVERS"):
            pytest.fail("kustomize is missing: scripts/tools.sh installs it")
        pytest.skip("kustomize not installed (scripts/tools.sh installs it)")
    return found


def render(path: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kustomize(), "build", str(K8S / path)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for doc in docs:
        template = doc.get("spec", {}).get("template")
        if template:
            specs.append((f"{doc['kind']}/{doc['metadata']['name']}", template["spec"]))
    return specs


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders_and_validates_against_the_api_schemas(path: str) -> None:
    import kubernetes_validate

    docs = render(path)
    kinds = {doc["kind"] for doc in docs}
    assert {"Namespace", "Deployment", "StatefulSet", "Service", "Job", "ConfigMap"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_pods_are_restricted_pinned_and_sized(path: str) -> None:
    specs = pod_specs(render(path))
    assert len(specs) == 3
    for where, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for container in spec.get("initContainers", []) + spec["containers"]:
            name = f"{where}:{container['name']}"
            image, _, tag = container["image"].partition(":")
            assert PINNED_IMAGES.get(image) == tag, name
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), name
            assert "memory" in resources["limits"], name


def test_overlays_change_what_they_say() -> None:
    def settings(path: str) -> dict[str, str]:
        docs = render(path)
        return next(d["data"] for d in docs if d["metadata"]["name"].startswith("dcstore-settings"))

    assert settings("base")["CACHE_URL"].startswith("redis://")
    assert settings("overlays/memcached")["CACHE_URL"].startswith("memcached://")
    job = next(d for d in render("overlays/production") if d["kind"] == "Job")
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_the_image_installs_the_extra_of_every_cache_tier_the_overlays_use() -> None:
    """The memcached overlay's Job failed at start: the image lacked pymemcache."""
    installed = (REPO / "Dockerfile").read_text().split('"/src[', 1)[1].split("]", 1)[0]
    for path in KUSTOMIZATIONS:
        docs = render(path)
        data = next(d["data"] for d in docs if d["metadata"]["name"].startswith("dcstore-settings"))
        scheme = data["CACHE_URL"].split("://", 1)[0]
        assert scheme in installed.split(","), (path, scheme, installed)


def test_the_key_reaches_the_trainer_as_a_private_file() -> None:
    """The Secret is copied mode 0600 into a memory-backed volume: dcstore refuses
    group-readable key files, which a Secret volume under fsGroup is. It goes into a
    folder of its own, mode 0700: dcstore also refuses key files in folders others may
    write, which an emptyDir (0777, no sticky bit) is."""
    job = next(d for d in render("base") if d["kind"] == "Job")
    spec = job["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["command"][:2] == ["sh", "-c"]
    assert init["command"][2].split() == [
        "install", "-d", "-m", "0700", "/run/dcstore/keys/private", "&&",
        "install", "-m", "0600", "/run/secrets/dcstore/kek.json",
        "/run/dcstore/keys/private/kek.json",
    ]  # fmt: skip
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["keys"]["emptyDir"]["medium"] == "Memory"
    assert volumes["kek-secret"]["secret"]["secretName"] == "dcstore-kek"
    settings = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    literals = dict(item.split("=", 1) for item in settings["configMapGenerator"][1]["literals"])
    assert literals["KEYS_URL"] == "file:///run/dcstore/keys/private/kek.json"


def test_the_example_training_script_trains_on_an_encrypted_dataset(tmp_path: Path) -> None:
    from PIL import Image

    from dcstore.crypto import FileKeySource, Keyring
    from dcstore.loaders import ShardWriter

    keyfile = tmp_path / "kek.json"
    FileKeySource(str(keyfile)).save(Keyring.generate("kek-k8s"))
    keys = f"file://{keyfile}"
    with ShardWriter(str(tmp_path / "ds"), keys=keys, shard_size=64 << 10) as writer:
        for i in range(96):
            image = Image.new("RGB", (40 + i % 7, 30 + i % 5), (i * 5 % 256, 80, 160))
            jpg = io.BytesIO()
            image.save(jpg, format="JPEG")
            writer.write({"__key__": f"s{i:04d}", "jpg": jpg.getvalue(), "cls": b"%d" % (i % 4)})
    env = {
        **os.environ,
        "DATASET_URL": str(tmp_path / "ds"),
        "CACHE_URL": "memory",
        "KEYS_URL": keys,
        "WORKERS": "2",
        "EPOCHS": "2",
    }
    proc = subprocess.run(
        [sys.executable, str(K8S / "base" / "train.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 1 step 0 loss" in proc.stdout


def test_the_memcached_url_knows_the_servers_item_limit() -> None:
    """The servers ran -I 4m but the overlay's CACHE_URL lacked item_size_max: chunks of
    half the default 1 MiB, while docs/cache.md says the URL must know the servers' -I."""
    from dcstore.cache import open_cache_tier
    from dcstore.cache.memcached_tier import MemcachedTier

    docs = yaml.safe_load_all((K8S / "base" / "memcached.yaml").read_text())
    server = next(d for d in docs if d and d["kind"] == "StatefulSet")
    args = server["spec"]["template"]["spec"]["containers"][0]["args"]
    limit = args[args.index("-I") + 1]
    item_size = int(limit[:-1]) << {"k": 10, "m": 20}[limit[-1].lower()]
    overlay = yaml.safe_load((K8S / "overlays" / "memcached" / "kustomization.yaml").read_text())
    literals = dict(item.split("=", 1) for item in overlay["configMapGenerator"][0]["literals"])
    tier = open_cache_tier(literals["CACHE_URL"])
    assert isinstance(tier, MemcachedTier) and tier.item_size_max == item_size
    assert tier.policy.chunk_bytes == item_size // 2


def test_the_image_installs_the_text_extra() -> None:
    """The image lacked tokenizers: `pack --text --tokenizer tokenizer.json` failed in it."""
    installed = (REPO / "Dockerfile").read_text().split('"/src[', 1)[1].split("]", 1)[0]
    assert "text" in installed.split(",")


def test_the_readme_states_the_chunk_sizes_and_public_key_ingest_as_they_are() -> None:
    """It said chunks of "about 1 MiB" (4 MiB in Redis, 512 KiB in memcached by default)
    and that ingest jobs need the full key file "until public-key wrapping lands"."""
    from dcstore.cache.memcached_tier import DEFAULT_ITEM_SIZE_MAX
    from dcstore.cache.tier import CachePolicy

    text = " ".join((K8S / "README.md").read_text().split())
    assert f"A chunk is {CachePolicy().chunk_bytes >> 20} MiB in Redis" in text
    assert f"without it, {DEFAULT_ITEM_SIZE_MAX // 2 >> 10} KiB chunks" in text
    assert "until public-key wrapping lands" not in text
    assert "keys export-public" in text and "packs a store only once" in text
