"""The `shapes` synthetic dataset (glidekit.data.shapes) and its scorer (glidekit.eval.shapes_score)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from glidekit.data import build_dataset
from glidekit.data.common import collate
from glidekit.data.shapes import (
    COLOURS,
    GRAMMAR,
    N_ONE_OBJECT,
    N_TWO_OBJECT,
    LAYOUTS,
    PALETTE,
    PLACE_CENTRE,
    PLACES,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeSpec,
    ShapesDataset,
    all_captions,
    canonical_scene,
    parse_caption,
    random_captions,
    render_scene,
    scene_slots,
)
from glidekit.errors import GlidekitError
from glidekit.eval import Detected, detect_objects, score, score_batch

N_SCORE = 300  # samples per accuracy check


def _noisy(x: torch.Tensor, seed: int, std: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _blurred(im: Image.Image) -> np.ndarray:
    return np.asarray(im.filter(ImageFilter.GaussianBlur(1)))


# --------------------------------------------------------------------------------------------
# dataset


def test_sample_format_and_key():
    ds = ShapesDataset(32, length=10, seed=3)
    s = ds[4]
    assert set(s) == {"image", "caption", "label", "key"}
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert s["image"].min() >= -1 and s["image"].max() <= 1
    assert s["image"].min() == -1  # black background
    assert s["label"] == -1 and s["key"] == "shapes-3-4"
    assert len(ds) == 10
    assert ds[10_000]["key"] == "shapes-3-10000"  # unlimited: length is only the epoch size
    batch = collate([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["caption"]) == 4
    assert ShapesDataset(None).image_size == 64  # what build_dataset passes when no size is given
    assert ShapesDataset(17)[0]["image"].shape == (3, 17, 17)
    with pytest.raises(GlidekitError):
        ShapesDataset(8)


def test_deterministic_per_seed_and_index():
    a, b = ShapesDataset(32, seed=5), ShapesDataset(32, seed=5)
    later = [b[i] for i in (7, 3, 0)]  # other order, other instance
    for s, i in zip(later, (7, 3, 0)):
        t = a[i]
        assert torch.equal(s["image"], t["image"]) and s["caption"] == t["caption"]
    assert a.spec(3) == b.spec(3)
    other = ShapesDataset(32, seed=6)
    assert sum(torch.equal(a[i]["image"], other[i]["image"]) for i in range(20)) == 0
    assert len({a[i]["caption"] for i in range(40)}) > 30


def test_spec_matches_caption_and_geometry():
    ds = ShapesDataset(64, seed=0)
    kinds = []
    for i in range(300):
        sc = ds.spec(i)
        if i < 20:
            assert sc.caption == ds[i]["caption"]
        assert parse_caption(sc.caption).objects == tuple(
            ShapeSpec(o.colour, o.shape, o.size if sc.kind == "one" else None) for o in sc.objects)
        kinds.append(sc.kind)
        for o in sc.objects:
            h = o.extent / 2
            assert o.size in SIZES and 0.19 < o.extent < 0.41
            assert 0.0 < o.centre[0] - h and o.centre[0] + h < 1.0
            assert 0.0 < o.centre[1] - h and o.centre[1] + h < 1.0
        if sc.kind == "two":
            (ax, ay), (bx, by) = sc.objects[0].centre, sc.objects[1].centre
            along, across = (ay - by, ax - bx) if sc.relation in ("above", "below") else (ax - bx, ay - by)
            assert abs(along) >= 3 * abs(across)  # unambiguous
            assert abs(along) >= (sc.objects[0].extent + sc.objects[1].extent) / 2  # no overlap
            assert (along < 0) == (sc.relation in ("above", "to the left of"))
            assert sc.objects[0].colour != sc.objects[1].colour
    assert 0.4 < kinds.count("two") / len(kinds) < 0.6
    assert all(ShapesDataset(32, two_object_fraction=0.0).spec(i).kind == "one" for i in range(30))
    assert all(ShapesDataset(32, two_object_fraction=1.0).spec(i).kind == "two" for i in range(30))


def test_palette_pure_colours_clean_edges():
    ds = ShapesDataset(64, seed=2, two_object_fraction=0.0)
    for i in range(10):
        arr = np.asarray(ds.render(i)).reshape(-1, 3)
        colour = PALETTE[ds.spec(i).objects[0].colour]
        inside = arr[(arr == colour).all(1)]
        assert len(inside) > 0.015 * len(arr)  # solid interior of the exact palette colour
        # every pixel is a blend of the palette colour and black (anti-aliased edge), nothing else
        frac = arr.max(1, keepdims=True) / max(colour)
        assert np.abs(arr - frac * np.array(colour)).max() <= 2


def test_hflip_keeps_captions_true():
    ds = ShapesDataset(32, seed=0, hflip=True)
    flipped = sum(ds._flipped(i) for i in range(200))
    assert 60 < flipped < 140
    plain = ShapesDataset(32, seed=0)
    for i in range(200):
        if ds._flipped(i):
            a, b = ds.spec(i), plain.spec(i)
            swap = {"on the left": "on the right", "on the right": "on the left",
                    "to the left of": "to the right of", "to the right of": "to the left of"}
            assert a.caption == re.sub("|".join(swap), lambda m: swap[m.group(0)], b.caption)
    imgs = torch.stack([ds[i]["image"] for i in range(100)])
    assert score_batch(imgs, [ds[i]["caption"] for i in range(100)])["whole_caption"] == 1.0


def test_canonical_captions_say_above_or_left_of_and_stay_true():
    canon, plain = ShapesDataset(32, seed=0, split="canonical"), ShapesDataset(32, seed=0)
    caps, swapped = [], 0
    for i in range(200):
        a, b = canon[i], plain[i]
        assert torch.equal(a["image"], b["image"]) and a["key"] == b["key"]
        if b["caption"] != a["caption"]:
            swapped += 1
            x, rel, y = re.fullmatch(r"(a \w+ \w+) (below|to the right of) (a \w+ \w+)", b["caption"]).groups()
            assert a["caption"] == f"{y} {'above' if rel == 'below' else 'to the left of'} {x}"
        caps.append(a["caption"])
    assert 30 < swapped < 70  # about half the two-object half
    assert not any(" below " in c or "to the right of" in c for c in caps)
    imgs = torch.stack([canon[i]["image"] for i in range(100)])
    assert score_batch(imgs, caps[:100])["whole_caption"] == 1.0
    assert build_dataset("shapes:canonical", 32)[5]["caption"] == caps[5]
    with pytest.raises(GlidekitError, match="use shapes or shapes:canonical"):
        build_dataset("shapes:sorted", 32)


# --------------------------------------------------------------------------------------------
# grammar


def test_grammar_constants():
    assert GRAMMAR["colour"] == COLOURS == ("red", "green", "blue", "yellow", "purple", "cyan", "white")
    assert SHAPES == ("circle", "square", "triangle") and SIZES == ("small", "large")
    assert PLACES == ("on the left", "on the right", "at the top", "at the bottom", "in the center")
    assert RELATIONS == ("above", "below", "to the left of", "to the right of")
    assert (N_ONE_OBJECT, N_TWO_OBJECT) == (210, 1512)


def test_every_grammar_caption_parses_and_round_trips():
    n = 0
    for size, colour, shape, place in itertools.product(SIZES, COLOURS, SHAPES, PLACES):
        cap = f"a {size} {colour} {shape} {place}"
        sc = parse_caption(cap)
        assert sc.kind == "one" and sc.caption == cap and sc.place == place
        n += 1
    for c1, s1, rel, c2, s2 in itertools.product(COLOURS, SHAPES, RELATIONS, COLOURS, SHAPES):
        cap = f"a {c1} {s1} {rel} a {c2} {s2}"
        if c1 == c2:
            with pytest.raises(ValueError):
                parse_caption(cap)
            continue
        sc = parse_caption(cap)
        assert sc.kind == "two" and sc.caption == cap and sc.relation == rel
        assert [(o.colour, o.shape) for o in sc.objects] == [(c1, s1), (c2, s2)]
        n += 1
    assert n == N_ONE_OBJECT + N_TWO_OBJECT
    assert parse_caption("  A Large  RED circle on the left. ").caption == "a large red circle on the left"


def test_all_captions_are_the_grammar_once_each():
    one, two = all_captions("one"), all_captions("two")
    assert (len(one), len(two)) == (len(set(one)), len(set(two))) == (N_ONE_OBJECT, N_TWO_OBJECT)
    assert {parse_caption(c).kind for c in one} == {"one"} and {parse_caption(c).kind for c in two} == {"two"}
    assert set(random_captions(300, seed=3)) <= set(one) | set(two)
    with pytest.raises(ValueError):
        all_captions("three")


def test_scene_slots_do_not_depend_on_the_wording():
    """The object on top or on the left comes first whichever way the caption words the scene;
    every two-object caption and its converse give the same slots."""
    first, second, layout = scene_slots(parse_caption("a red circle below a blue square"))
    assert (first.colour, first.shape, second.colour, second.shape, layout) == ("blue", "square", "red", "circle", "vertical")
    first, second, layout = scene_slots(parse_caption("a red circle to the left of a blue square"))
    assert (first.colour, second.colour, layout) == ("red", "blue", "horizontal")
    first, second, layout = scene_slots(parse_caption("a small green triangle at the top"))
    assert (first.colour, first.shape, first.size, second, layout) == ("green", "triangle", "small", None, "at the top")
    seen = {}
    for cap in all_captions("two"):
        scene = parse_caption(cap)
        slots = scene_slots(scene)
        assert slots == scene_slots(canonical_scene(scene)) and slots[2] in LAYOUTS
        seen.setdefault(tuple((o.colour, o.shape) for o in slots[:2]) + (slots[2],), []).append(cap)
    assert len(seen) == N_TWO_OBJECT // 2 and all(len(v) == 2 for v in seen.values())  # each scene worded two ways


@pytest.mark.parametrize("caption", [
    "", "a red circle", "a large red circle", "a large red circle on the side", "a huge red circle on the left",
    "a large orange circle on the left", "a large red hexagon on the left", "an large red circle on the left",
    "a large red circle on the left and a blue square", "a red circle above a red square",
    "a red circle next to a blue square", "a small red circle above a blue square", "the red circle above a blue square",
    "a red circle above blue square", "a red circle in the centre", "a large red circle on the left!",
])
def test_parse_caption_rejects_off_grammar(caption):
    with pytest.raises(ValueError):
        parse_caption(caption)


def test_captions_stay_in_grammar():
    ds = ShapesDataset(32, seed=11)
    for cap in [ds[i]["caption"] for i in range(50)] + random_captions(500, seed=1):
        parse_caption(cap)
    caps = random_captions(2000, seed=0)
    assert caps == random_captions(2000, seed=0) and caps != random_captions(2000, seed=1)
    two = [parse_caption(c).kind == "two" for c in caps]
    assert 0.45 < np.mean(two) < 0.55
    assert all(parse_caption(c).kind == "one" for c in random_captions(50, seed=0, two_object_fraction=0.0))
    # uniform over the grammar: every word of every slot shows up about equally often
    ones = [parse_caption(c) for c in caps if parse_caption(c).kind == "one"]
    for words, get in ((COLOURS, lambda s: s.objects[0].colour), (PLACES, lambda s: s.place)):
        counts = np.array([sum(get(s) == w for s in ones) for w in words])
        assert counts.min() > 0.5 * len(ones) / len(words)
    assert len(set(caps)) > 850  # expected about 210 + 1512 * (1 - exp(-1000 / 1512)) = 942


# --------------------------------------------------------------------------------------------
# scorer


@pytest.mark.parametrize("size", [32, 64])
def test_scorer_on_own_renders(size, one_thread):
    ds = ShapesDataset(size, seed=100 + size)
    clean = [ds.render(i) for i in range(N_SCORE)]
    caps = [ds.spec(i).caption for i in range(N_SCORE)]
    tensors = torch.stack([ds[i]["image"] for i in range(N_SCORE)])
    res = score_batch(tensors, caps)
    assert res["n"] == N_SCORE and res["one"]["n"] + res["two"]["n"] == N_SCORE
    assert res["whole_caption"] >= 0.99, res
    for group in ("one", "two"):
        assert res[group]["whole_caption"] >= 0.99, res
    # mild generation-like damage: Gaussian noise (std 0.05 in [-1, 1]) and a 1 px Gaussian blur
    noisy = score_batch([_noisy(t, i) for i, t in enumerate(tensors)], caps)
    assert noisy["whole_caption"] >= 0.95, noisy
    blurred = score_batch([_blurred(im) for im in clean], caps)
    assert blurred["whole_caption"] >= 0.95, blurred


def test_score_fields_and_inputs():
    ds = ShapesDataset(64, seed=0, two_object_fraction=0.0)
    sc = ds.spec(0)
    x = ds[0]["image"]
    arr = np.asarray(ds.render(0))
    r = score(x, sc.caption)
    assert r["kind"] == "one" and r["objects"] == 1 and r["whole_caption"] is True
    assert {"colour", "shape", "size", "place", "count"} <= set(r)
    (d,) = r["detections"]
    assert isinstance(d, Detected) and d.colour == sc.objects[0].colour and d.shape == sc.objects[0].shape
    assert abs(d.centre[0] - sc.objects[0].centre[0]) < 0.03 and abs(d.centre[1] - sc.objects[0].centre[1]) < 0.03
    # the same answer from every accepted image type
    for im in (arr, ds.render(0), x[None], x.numpy(), arr.transpose(2, 0, 1)):
        assert [(e.colour, e.shape, e.size, e.place) for e in detect_objects(im)] == [(d.colour, d.shape, d.size, d.place)]
    assert detect_objects(np.zeros((32, 32, 3), np.uint8)) == []
    with pytest.raises(ValueError):
        score(x, "a dog")


def _swap(caption: str, pool, old: str) -> str:
    new = next(w for w in pool if w != old)
    return re.sub(rf"\b{old}\b", new, caption, count=1)


def test_scorer_catches_wrong_captions():
    ds = ShapesDataset(64, seed=21)
    checked = {"colour": 0, "shape": 0, "size": 0, "place": 0, "relation": 0, "order": 0}
    for i in range(60):
        sc, x = ds.spec(i), ds[i]["image"]
        dets = detect_objects(x)
        assert score(x, sc.caption, detections=dets)["whole_caption"]
        a = sc.objects[0]
        others = [o.colour for o in sc.objects]
        wrong = {
            "colour": _swap(sc.caption, [c for c in COLOURS if c not in others], a.colour),
            "shape": _swap(sc.caption, SHAPES, a.shape),
        }
        if sc.kind == "one":
            wrong["size"] = _swap(sc.caption, SIZES, a.size)
            wrong["place"] = sc.caption.replace(sc.place, next(p for p in PLACES if p != sc.place))
        else:
            b = sc.objects[1]
            wrong["relation"] = sc.caption.replace(sc.relation, next(r for r in RELATIONS if r != sc.relation))
            # the same two objects named in the other order keep the relation word: now false
            wrong["order"] = f"a {b.colour} {b.shape} {sc.relation} a {a.colour} {a.shape}"
        for attr, cap in wrong.items():
            r = score(x, cap, detections=dets)
            assert r["whole_caption"] is False, (attr, sc.caption, cap)
            key = "relation" if attr == "order" else attr
            assert r[key] is False, (attr, sc.caption, cap, r)
            checked[attr] += 1
    assert min(checked.values()) >= 10, checked


def test_scorer_counts_objects():
    one = ShapesDataset(32, seed=4, two_object_fraction=0.0)
    two = ShapesDataset(32, seed=4, two_object_fraction=1.0)
    for i in range(10):
        # a two-object image does not satisfy a one-object caption naming either object, and
        # vice versa
        s2 = two.spec(i)
        o = s2.objects[0]
        r = score(two[i]["image"], f"a large {o.colour} {o.shape} in the center")
        assert r["objects"] == 2 and r["count"] is False and r["whole_caption"] is False
        s1 = one.spec(i)
        o = s1.objects[0]
        other = next(c for c in COLOURS if c != o.colour)
        r = score(one[i]["image"], f"a {o.colour} {o.shape} above a {other} circle")
        assert r["objects"] == 1 and r["count"] is False and r["colour"] is False and r["whole_caption"] is False


def test_scorer_ignores_specks_and_fringes():
    scene = Scene((ShapeSpec("white", "square", "large", (0.3, 0.5), 0.38),), place="on the left")
    arr = np.array(render_scene(scene, 64))
    x0, y0, x1, y1 = detect_objects(arr)[0].bbox
    rim = np.zeros(arr.shape[:2], bool)
    rim[y0 - 1:y1 + 2, x0 - 1:x1 + 2] = True
    rim[y0:y1 + 1, x0:x1 + 1] = False
    arr[rim] = (0, 255, 255)  # a one-pixel cyan rim around the square
    arr[60:62, 60:62] = (255, 0, 0)  # a red speck
    r = score(arr, "a large white square on the left")
    assert r["whole_caption"], r
    assert [d.colour for d in r["detections"]] == ["white"]


def test_scorer_tolerates_off_palette_generations():
    # hues and brightness off the palette, a dark grey background: what a model may produce
    scene = Scene((ShapeSpec("purple", "circle", "small", (0.3, 0.3), 0.22),
                   ShapeSpec("yellow", "triangle", "large", (0.7, 0.65), 0.38)), relation="to the left of")
    arr = np.asarray(render_scene(scene, 64)).astype(np.float64)
    purple = (arr == PALETTE["purple"]).all(-1)
    yellow = (arr == PALETTE["yellow"]).all(-1)
    arr[purple] = (140, 40, 200)
    arr[yellow] = (230, 210, 40)
    arr = np.clip(arr + 25, 0, 255).astype(np.uint8)
    r = score(arr, "a purple circle to the left of a yellow triangle")
    assert r["whole_caption"], [(d.colour, d.shape) for d in r["detections"]]


def test_paraphrases_leave_the_grammar():
    """Each family swaps all of its words for synonyms outside the grammar and nothing else."""
    from glidekit.data.shapes import PARAPHRASES, paraphrase, parse_caption, random_captions

    for family, table in PARAPHRASES.items():
        for caption in random_captions(100, 2):
            out = paraphrase(caption, family)
            assert all(f" {k} " not in f" {out} " for k in table), (caption, out)
            if out == caption:
                assert family == "size" and parse_caption(caption).kind == "two"
            else:
                with pytest.raises(ValueError):
                    parse_caption(out)
    assert paraphrase("a red circle to the left of a blue square", "layout") == "a red circle left of a blue square"
    assert paraphrase("a small red circle at the top", "size") == "a tiny red circle at the top"
    assert paraphrase("a small red circle at the top", "colour") == "a small scarlet circle at the top"
    assert paraphrase("a small red circle at the top", "layout") == "a small red circle on top"
    with pytest.raises(ValueError, match="unknown word family"):
        paraphrase("a red circle", "texture")


def test_outside_grammar_lists_the_captions_parse_caption_refuses():
    from glidekit.data.shapes import outside_grammar

    caps = ["a small red circle at the top", "a big red circle on top", "a red circle above a red square",
            "a red circle above a blue square"]
    assert outside_grammar(caps) == caps[1:3]
    assert outside_grammar([]) == []


def test_composed_rewrite_of_two_object_captions_tells_the_same_scene():
    """scripts/shapes_composed.py: "A rel B" -> "A at its side AND B at the other" (Composable Diffusion)."""
    import importlib.util
    from pathlib import Path

    from glidekit.pipelines import prompt_parts

    spec = importlib.util.spec_from_file_location("composed", Path(__file__).parents[1] / "scripts" / "shapes_composed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.composed("a red circle above a blue square") == \
        "a small red circle at the top AND a small blue square at the bottom"
    for caption in random_captions(200, seed=3):
        scene = parse_caption(caption)
        if scene.kind == "one":
            with pytest.raises(ValueError):
                mod.composed(caption)
            continue
        parts = [parse_caption(p) for p in prompt_parts(mod.composed(caption, "large"))]
        assert [p.objects[0].colour for p in parts] == [o.colour for o in scene.objects]
        assert [p.objects[0].shape for p in parts] == [o.shape for o in scene.objects]
        first, second = (PLACE_CENTRE[p.place] for p in parts)
        axis = 1 if scene.relation in ("above", "below") else 0
        sign = -1 if scene.relation in ("above", "to the left of") else 1  # image y grows downwards
        assert sign * (first[axis] - second[axis]) > 0


def test_split_grid_inverts_make_grid():
    from PIL import Image

    from glidekit.images import make_grid, split_grid

    tiles = [Image.new("RGB", (5, 7), (i * 20, 255 - i * 20, i)) for i in range(11)]
    back = split_grid(make_grid(tiles, ncols=4), 11, 4)
    assert [t.tobytes() for t in back] == [t.tobytes() for t in tiles]
    with pytest.raises(ValueError):
        split_grid(make_grid(tiles, ncols=4), 11, 5)


def test_size_share_script_reads_a_sweep_grid(tmp_path, capsys):
    """scripts/shapes_sizes.py: the large-object share of two-object scenes in a sweep grid equals the
    share measured on the tiles it was made from; a file that is not a grid is one error line."""
    import importlib.util
    from pathlib import Path

    from glidekit.eval.sweep import GRID_COLS
    from glidekit.images import make_grid, save_png, tensor_to_pils

    spec = importlib.util.spec_from_file_location("sizes", Path(__file__).parents[1] / "scripts" / "shapes_sizes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ds = ShapesDataset(32, seed=7)
    items = [ds[i] for i in range(24)]
    captions = [x["caption"] for x in items]
    pils = tensor_to_pils(torch.stack([x["image"] for x in items]))
    grid = save_png(make_grid(pils, ncols=GRID_COLS), tmp_path / "g.png", metadata={"prompts": captions})
    got = mod.main([str(grid), "--renders", "8"])
    want = mod.large_share([np.asarray(p) for p in pils], captions)
    assert got["g.png"] == want and want["objects"] == 2 * sum(parse_caption(c).kind == "two" for c in captions)
    assert 0 < want["large"] < 1  # the stream draws both sizes
    (tmp_path / "not.png").write_text("text")
    with pytest.raises(SystemExit, match="not a sample grid"):
        mod.run(lambda: mod.main([str(tmp_path / "not.png")]), "shapes_sizes.py")
