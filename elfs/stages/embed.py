"""The embedding stage: every image through the frozen encoder (images only; no labels exist here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from elfs.cache import Artifact
from elfs.config import BackboneConfig
from elfs.data import UnlabelledData, is_streamed
from elfs.infra import distributed
from elfs.stages.context import Context
from elfs.stages.keys import stage_key


def stage_embed(ctx: Context, b: BackboneConfig, ds: UnlabelledData, *, num_workers: int = 0) -> Artifact:
    """Embed train (and test) images with the frozen backbone; a streamed source is decoded in ``num_workers``
    DataLoader workers batch by batch, and its artifact also holds `valid`, the indices of the decodable files,
    listing the others under meta["failed"]. Under DDP each rank embeds a contiguous 1/W of every split and rank 0
    gathers the parts in order. The features are stored once, as float16 (rounded batch by batch as they arrive:
    half the memory and disk of float32), in their own files that every later stage reads through a memory map."""
    from elfs.method.embed import resize_placement, resolve_device

    # where the images are resized changes the pixels by up to 2 grey levels (elfs/method/embed.py): part of the key; so
    # does TF32 (trainer.matmul_precision, set for the run in Context), keyed when not torch's default (full fp32)
    precision = ctx.trainer.matmul_precision
    tf32 = {} if precision == "highest" else {"matmul_precision": precision}
    config = stage_key("embed", {"backbone": b}, resize=resize_placement(resolve_device(b.device)), **tf32)
    inputs = {"train": ds.train.fingerprint()}
    if ds.test is not None:
        inputs["test"] = ds.test.fingerprint()

    def compute():
        arrays: dict[str, np.ndarray] = {}
        failed: list[list[str]] = []
        for split, images in (("train", ds.train), ("test", ds.test)):
            if images is None:
                continue
            emb, valid, bad, sig = _embed_split(ctx, b, images, num_workers, signatures=split == "train")
            arrays[split] = emb
            if sig is not None:  # near-copies are confirmed by them (selection.dedup)
                arrays["signature"] = sig
            if is_streamed(images):  # which files decoded; the others are reported, by path
                arrays["valid" if split == "train" else "test_valid"] = valid
                tag = "" if split == "train" else "(test) "
                failed += [[f"{tag}{images.paths[i]}", why] for i, why in bad]
        extra = {"failed": failed} if is_streamed(ds.train) or failed else {}
        return arrays, {**extra, "n_train": len(arrays["train"]), "dim": arrays["train"].shape[1]}

    art = ctx.cache.run(
        "embed",
        config,
        inputs,
        compute,
        every_rank=distributed.world_size() > 1,
        module=__name__,
        mapped=("train", "test"),
    )
    return ctx.timed("embed", art)


def _embed_split(
    ctx: Context, b: BackboneConfig, images: Any, num_workers: int, *, signatures: bool = False
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]], np.ndarray | None]:
    """(features of the decodable images, their indices, (index, reason) of the others, their pixel signatures or
    None) for one split; under DDP this rank embeds its contiguous share and rank 0 receives every rank's (the
    others get their own part only)."""
    from elfs.data import ImageSet
    from elfs.method.embed import embed_folder, embed_images

    kw = dict(
        progress_every_s=ctx.progress_every_s,
        image_size=b.image_size,
        batch_size=b.batch_size,
        device=b.device,
        pretrained=b.pretrained,
        progress=ctx.progress,
        model=b.model,
        weights=b.weights,
        half=True,
    )
    share = np.array_split(np.arange(len(images)), distributed.world_size())[distributed.rank()]
    if is_streamed(images):
        part = images if len(share) == len(images) else images.subset(share)
        emb, valid, bad, *sig = embed_folder(part, b.name, num_workers=num_workers, signatures=signatures, **kw)
    else:
        part = images if len(share) == len(images) else ImageSet(images.images[share], images.name)
        got = embed_images(part.images, b.name, signatures=signatures, **kw)
        emb, sig = (got[0], [got[1]]) if signatures else (got, [])
        valid, bad = np.arange(len(share)), []
    mine = (emb, share[valid], [(int(share[i]), why) for i, why in bad], sig[0] if sig else None)
    parts = distributed.gather_to_zero(mine)  # [mine] outside DDP; rank order = index order (contiguous shares)
    return (
        parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts]),  # one part: no second copy
        np.concatenate([p[1] for p in parts]).astype(np.int64),
        sorted(x for p in parts for x in p[2]),
        np.concatenate([p[3] for p in parts]) if signatures else None,
    )
