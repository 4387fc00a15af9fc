"""The models that ship inside glidekit: present, loadable by name, the CLI default, the demo."""

import json
import os
import shutil

import pytest
import torch
from PIL import Image

from glidekit.bundled import BUNDLED, DEFAULT_MODEL, bundled_path, list_bundled
from glidekit.cli import main
from glidekit.download import file_identity
from glidekit.errors import CheckpointError
from glidekit.io import load_checkpoint, load_model
from glidekit.train_config import resolve_train_config, train_config_to_dict

MAX_BYTES = 40 * 2**20  # issue 7: each bundled file at most 40 MB


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_file_is_small_float16_with_config_and_card(name):
    path = bundled_path(name)
    assert path.stat().st_size <= MAX_BYTES
    kind, cfg, sd, meta = load_checkpoint(path)
    assert kind == BUNDLED[name].kind
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    card = BUNDLED[name].card.read_text()
    for heading in ("Data", "Recipe", "Compute", "Quality", "Licence"):
        assert f"## {heading}" in card, (name, heading)
    model, kind, _ = load_model(name)
    assert next(model.parameters()).dtype == torch.float32  # loads into float32 for the CPU


def _card_recipe(name: str) -> list[str]:
    """The commands in the ```sh block of a bundled model card's Recipe, one per training run."""
    card = BUNDLED[name].card.read_text()
    recipe = card[card.index("## Recipe"):card.index("## Compute")]
    start = recipe.index("```sh\n") + 6
    return recipe[start:recipe.index("\n```", start)].splitlines()


@pytest.mark.parametrize("name", [n for n, m in BUNDLED.items() if not m.kind.startswith("clip")])
def test_glide_info_lists_the_training_runs_the_card_lists(name, capsys):
    """The stages a bundled file records (what `glide info` prints) are the runs its card's Recipe lists,
    command for command: the file describes itself without its card."""
    assert main(["info", name]) == 0
    info = json.loads(capsys.readouterr().out)
    stages = json.loads(load_checkpoint(bundled_path(name))[3]["train_stages"])
    assert [t["steps"] for t in info["trained_with"]] == [st["steps"] for st in stages] and len(stages) >= 2
    assert [t["command"] for t in info["trained_with"]] == _card_recipe(name)


def _bundle_script():
    """scripts/bundle_model.py as a module (it is a script, not part of the package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bundle_model", Path(__file__).parents[1] / "scripts" / "bundle_model.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    return bundle


def test_unknown_or_missing_bundled_model_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(CheckpointError, match="no bundled model 'nope'"):
        bundled_path("nope")
    monkeypatch.setattr("glidekit.bundled.BUNDLE_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="missing from this install"):
        bundled_path("shapes")
    assert not any(r["present"] for r in list_bundled())


def test_glide_sample_without_model_uses_the_bundled_default(tmp_path, capsys):
    code = main(["sample", "a red circle above a blue square", "--out", str(tmp_path), "--quiet", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    png = list(tmp_path.glob("*.png"))
    assert len(png) == 1
    with Image.open(png[0]) as im:
        assert im.size == (32, 32)  # no upsampler for the bundled model ("auto" -> none)
        record = json.loads(im.text["glidekit"])
    assert record["model"] == DEFAULT_MODEL and record["upsampler"] == "none", (record, out)
    # the record names the file by content, as for a path, so --from-png can warn when the model changed
    assert record["model_sha256"] == file_identity(bundled_path(DEFAULT_MODEL))


def test_demo_writes_grids_and_an_inpainting_edit(tmp_path):
    from glidekit.demo import run_demo

    summary = run_demo(out_dir=str(tmp_path / "demo"))
    names = sorted(p.name for p in (tmp_path / "demo").glob("*.png"))
    assert names == sorted(["shapes.png", "inpaint.png", "emoji.png", "emoji_256.png", "emoji_inpaint.png"])
    with Image.open(tmp_path / "demo" / "emoji_256.png") as im:  # the first emoji samples at the upsampler's size
        record = json.loads(im.text["glidekit"])
        assert record["model"] == "emoji-upsample" and im.height >= 256 and im.width >= 2 * 256
        assert record["prompts"] == ["red heart", "grinning face"]
    with Image.open(tmp_path / "demo" / "emoji_inpaint.png") as im:  # source, mask and one per prompt, in a row
        record = json.loads(im.text["glidekit"])
        assert record["model"] == "emoji-64-inpaint" and im.width > 4 * im.height
    assert record["model_sha256"] == file_identity(bundled_path("emoji-64-inpaint"))
    assert 0.0 <= summary["shapes_accuracy"] <= 1.0 and summary["sampling_s"] > 0


def test_model_card_follows_a_fine_tune_back_to_its_first_run(tmp_path):
    """scripts/bundle_model.py: a run whose init_from is another run's checkpoint is stage 2 of a
    recipe; the card lists both commands and each stage's steps and time."""
    bundle = _bundle_script()

    def run(name, batch, init_from, rate):
        folder = tmp_path / name
        (folder / "checkpoints").mkdir(parents=True)
        cfg = resolve_train_config("shapes-32", [f"out_dir={folder}", f"batch_size={batch}", f"init_from={init_from}"])
        (folder / "config.json").write_text(json.dumps(train_config_to_dict(cfg)))
        logs = [{"step": s, "loss": 0.1, "time": 1000.0 + 10 * s, "samples_per_s": rate} for s in range(0, 301, 50)]
        (folder / "log.jsonl").write_text("\n".join(json.dumps(r) for r in logs) + "\n")
        return folder

    first = run("first", 32, "", 20.0)
    second = run("second", 16, str(first / "checkpoints" / "step-0000200" / "model.safetensors"), 30.0)
    stages = bundle._stages(second, 300, "shapes-32")
    assert [(s["steps"], s["batch"], s["rate"]) for s in stages] == [(200, 32, 20.0), (300, 16, 30.0)]
    assert stages[0]["hours"] == pytest.approx(2000 / 3600) and stages[1]["hours"] == pytest.approx(3000 / 3600)
    # the recipe is the run's saved config as overrides of the preset; the machine's folders do not leak into cards
    assert stages[0]["recipe"] == "out_dir=runs/first batch_size=32"
    assert stages[1]["recipe"] == "out_dir=runs/second batch_size=16 init_from=runs/first/checkpoints/step-0000200/model.safetensors"
    assert len(bundle._stages(first, 300, "shapes-32")) == 1


def test_model_card_hours_leave_out_the_pauses_between_stop_and_resume():
    """A run stopped and resumed later logs its last step again (or its next row long after): the card's
    hours count the steps over the pause at the run's median rate, not the pause."""
    bundle = _bundle_script()
    rows = [{"step": s, "time": float(s)} for s in range(0, 101, 10)]  # 1 s a step
    resumed = [{"step": 100, "time": 5000.0}, *({"step": s, "time": 5000.0 + s - 100} for s in range(110, 201, 10))]
    assert bundle._training_hours(rows) == pytest.approx(100 / 3600)
    assert bundle._training_hours(rows + resumed) == pytest.approx(200 / 3600)  # logged again at step 100
    later = [{"step": 110, "time": 9000.0}, *({"step": s, "time": 9000.0 + s - 110} for s in range(120, 201, 10))]
    assert bundle._training_hours(rows + later) == pytest.approx(200 / 3600)  # next row 2.5 h later
    slow = [{"step": 110, "time": 100.0 + 150.0}]  # a preview or a slow stretch: under 20 median spans, counted
    assert bundle._training_hours(rows + slow) == pytest.approx(250 / 3600)


def _bundled_repo(tmp_path, monkeypatch, stages):
    """A git repo holding glidekit/bundled/m.safetensors that records `stages`, as bundle_model's REPO;
    and a run folder runs/ft fine-tuning that file. Returns (bundle_model, weights, git, commit, run)."""
    import subprocess

    from safetensors.torch import save_file

    bundle = _bundle_script()
    repo = tmp_path / "repo"
    (repo / "glidekit" / "bundled").mkdir(parents=True)
    monkeypatch.setattr(bundle, "REPO", repo)
    weights = repo / "glidekit" / "bundled" / "m.safetensors"
    save_file({"w": torch.zeros(1)}, str(weights), metadata={"train_stages": json.dumps(stages)})
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "m"], check=True)
    commit = subprocess.run([*git, "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()

    run = tmp_path / "runs" / "ft"
    (run / "checkpoints").mkdir(parents=True)
    cfg = resolve_train_config("shapes-32", ["lr=2", "init_from=glidekit/bundled/m.safetensors"])
    (run / "config.json").write_text(json.dumps(train_config_to_dict(cfg)))
    (run / "log.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 0.1, "time": 10.0 * s, "samples_per_s": 7.0})
                                             for s in (0, 50, 100)) + "\n")
    return bundle, weights, git, commit, run


def test_model_card_follows_a_fine_tune_of_a_bundled_file_through_its_metadata(tmp_path, monkeypatch):
    """A run whose init_from is a bundled file continues the stages that file records
    (`train_stages`, written by bundle_model); its recipe names the commit holding that file,
    since bundling replaces it. A file that records none needs --prior-stages; an uncommitted one is refused."""
    import subprocess

    from safetensors.torch import save_file

    old = [{"preset": "shapes-32", "recipe": "lr=1", "steps": 100, "batch": 8, "hours": 1.0, "rate": 5.0}]
    bundle, weights, git, commit, run = _bundled_repo(tmp_path, monkeypatch, old)
    stages = bundle._stages(run, 100, "shapes-32")
    assert stages[:1] == old and len(stages) == 2
    assert stages[1]["recipe"] == f"lr=2.0 init_from=m-{commit}.safetensors" and commit in stages[1]["source"]
    assert f"git show {commit}:glidekit/bundled/m.safetensors > m-{commit}.safetensors" in stages[1]["source"]
    cfg = json.loads((run / "config.json").read_text())  # a run that named the file by its absolute path
    (run / "config.json").write_text(json.dumps({**cfg, "init_from": str(weights)}))
    absolute = bundle._stages(run, 100, "shapes-32")
    assert absolute[1]["source"] == stages[1]["source"] and absolute[1]["recipe"] == stages[1]["recipe"]

    save_file({"w": torch.zeros(1)}, str(weights))  # no stages recorded, and not committed as it is
    with pytest.raises(SystemExit, match="not committed"):
        bundle._stages(run, 100, "shapes-32")
    subprocess.run([*git, "commit", "-qam", "n"], check=True)
    with pytest.raises(SystemExit, match="--prior-stages"):
        bundle._stages(run, 100, "shapes-32")
    assert bundle._stages(run, 100, "shapes-32", prior=old)[0] == old[0]


def test_model_card_follows_the_version_of_a_bundled_file_a_run_began_from(tmp_path, monkeypatch):
    """Bundling replaces a file in place, so a run's earlier stages are those of the version it began from:
    found by the sha256 `glide train` recorded, or for a run from before that record by the version
    committed when it logged its first step. A run bundled mid-way and bundled again later is one stage,
    and stays one after a later run replaced the file again; a run that began from the file as bundled
    mid-way is a stage after it. A record that cannot be read is one clear line."""
    import hashlib
    import subprocess

    from safetensors.torch import save_file

    from glidekit.train import INIT_FROM_RECORD

    first = {"preset": "shapes-32", "recipe": "lr=1", "steps": 100, "batch": 8, "hours": 1.0, "rate": 5.0}
    bundle, weights, git, began, run = _bundled_repo(tmp_path, monkeypatch, [first])

    def record(folder):  # what glide train writes beside the config of a run with init_from
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        (folder / INIT_FROM_RECORD).write_text(json.dumps({"path": "glidekit/bundled/m.safetensors", "sha256": digest}))

    def replace(stages, when):  # bundle_model writing a new version of the file, committed at Unix time `when`
        save_file({"w": torch.full((1,), float(len(stages)))}, str(weights), metadata={"train_stages": json.dumps(stages)})
        env = {**os.environ, "GIT_COMMITTER_DATE": f"@{when} +0000", "GIT_AUTHOR_DATE": f"@{when} +0000"}
        subprocess.run([*git, "commit", "-qam", "next"], check=True, env=env)
        return subprocess.run([*git, "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()

    record(run)
    early = bundle._stages(run, 50, "shapes-32")[1]  # the run bundled at step 50 ...
    mid_way = replace([first, early], 4_000_000_000)
    stages = bundle._stages(run, 100, "shapes-32")  # ... and again at step 100
    assert [s["steps"] for s in stages] == [100, 100] and stages[0] == first
    assert stages[1]["recipe"] == f"lr=2.0 init_from=m-{began}.safetensors" and began in stages[1]["source"]
    assert [s["steps"] for s in bundle._stages(run, 40, "shapes-32")] == [100, 40]  # an earlier checkpoint too
    later = {**first, "recipe": "lr=3"}
    latest = replace([first, stages[1], later], 4_100_000_000)
    assert bundle._stages(run, 100, "shapes-32") == stages

    other = run.parent / "other"  # a run that began from the file as bundled mid-way
    shutil.copytree(run, other)
    subprocess.run([*git, "checkout", "-q", mid_way, "--", "glidekit/bundled/m.safetensors"], check=True)
    record(other)
    assert [s["steps"] for s in bundle._stages(other, 100, "shapes-32")] == [100, 50, 100]
    assert mid_way in bundle._stages(other, 100, "shapes-32")[2]["source"]

    (run / INIT_FROM_RECORD).unlink()  # a run from before the record: the version committed when it began
    log = [{"step": s, "loss": 0.1, "time": 3_900_000_000 + 10.0 * s, "samples_per_s": 7.0} for s in (0, 50, 100)]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    assert began in bundle._stages(run, 100, "shapes-32")[1]["source"]
    # a run that began after the file was deleted began from the last version before: the deletion holds none
    env = {**os.environ, "GIT_COMMITTER_DATE": "@4200000000 +0000", "GIT_AUTHOR_DATE": "@4200000000 +0000"}
    subprocess.run([*git, "rm", "-qf", "glidekit/bundled/m.safetensors"], check=True)
    subprocess.run([*git, "commit", "-qm", "rm"], check=True, env=env)
    weights.parent.mkdir(parents=True, exist_ok=True)  # git removed the emptied folder; glidekit/bundled always has others
    log = [{**r, "time": r["time"] + 400_000_000} for r in log]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    after = bundle._stages(run, 100, "shapes-32")
    assert [st["recipe"] for st in after[:3]] == ["lr=1", stages[1]["recipe"], "lr=3"] and latest in after[3]["source"]
    (other / INIT_FROM_RECORD).write_text(json.dumps({"path": "m.safetensors", "sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="began from .* is in no commit"):
        bundle._stages(other, 100, "shapes-32")
    (other / INIT_FROM_RECORD).write_text("{")  # a damaged record: one line, not a traceback
    with pytest.raises(SystemExit, match="cannot read .*init_from.json"):
        bundle._stages(other, 100, "shapes-32")


def test_model_card_quality_reads_the_report_rows_beside_shapes(tmp_path, monkeypatch):
    """scripts/bundle_model.py: the default model's card takes its rows from docs/results/shapes.csv with
    `shapes`'s earlier report rows beside them, the two-object attributes and the ancestral comparison;
    rows of another version of a file are left out; a model without rows points at the command that
    measures it; --refresh rewrites only the sections from Quality on."""
    from glidekit.eval.sweep import write_csv

    bundle = _bundle_script()
    sha = {n: file_identity(bundled_path(n)) for n in (DEFAULT_MODEL, "shapes", "shapes-minilm")}

    def row(sampler, steps, g, whole, n=500, model=DEFAULT_MODEL):
        return {"model": sha.get(model, model), "sampler": sampler, "steps": steps, "guidance_type": "cfg", "guidance": g, "n": n,
                "whole_caption": whole, "one_whole_caption": 1.0, "two_whole_caption": whole / 2, "two_colour": 1.0,
                "two_shape": 0.5, "two_relation": 0.75, "two_count": 1.0, "one_place": 1.0}

    assert bundle._report_quality(DEFAULT_MODEL, tmp_path)[0].startswith("Not measured yet: run `make results`")
    old = "0123456789abcdef"  # an earlier version of a file: its rows measure something else
    write_csv(tmp_path / "shapes.csv", [{**row("dpm++2m", 20, 3.0, 0.9), "fid": 29.84}, row("ddim", 50, 3.0, 0.1),
                                        row("dpm++2m", 20, 0.0, 0.0), row("dpm++2m", 20, 8.0, 0.7, model=old)])
    write_csv(tmp_path / "shapes_ancestral.csv", [row("ancestral", 250, 3.0, 0.91, 100), row("dpm++2m", 20, 3.0, 0.9, 100)])
    write_csv(tmp_path / "shapes_32.csv", [row("dpm++2m", 20, 3.0, 0.6, model="shapes")])
    text = "\n".join(bundle._report_quality(DEFAULT_MODEL, tmp_path))
    assert "| 0 | 0.0 / 100.0 / 0.0 |  |  |  |" in text  # no FID, no `shapes` row at that scale: empty cells
    assert "| 3 | 90.0 / 100.0 / 45.0 | 29.8 | 60.0 / 100.0 / 30.0 |  |" in text and "10.0" not in text  # DDIM left out
    assert "| 8 |" not in text and "70.0" not in text  # the earlier file's row
    assert "shape 50.0 %, relation 75.0 %" in text and "within 1.0 points" in text
    shapes = "\n".join(bundle._report_quality("shapes", tmp_path))
    assert "`shapes`:" not in shapes and "git 4a3104e" in shapes and "| 3 | 60.0 / 100.0 / 30.0 |\n" in shapes
    not_measured = [f"Not measured yet: run `{bundle.SWEEP_CMD.format(m='shapes-minilm', csv='shapes_minilm.csv')}`."]
    assert bundle._sweep_quality("shapes-minilm", tmp_path) == not_measured
    write_csv(tmp_path / "shapes_minilm.csv", [row("dpm++2m", 20, 3.0, 0.8, model=old)])
    assert bundle._sweep_quality("shapes-minilm", tmp_path) == not_measured
    write_csv(tmp_path / "shapes_minilm.csv", [row("dpm++2m", 20, 3.0, 0.8, model="shapes-minilm")])
    assert "| 3 | 80.0 / 100.0 / 40.0 |" in "\n".join(bundle._sweep_quality("shapes-minilm", tmp_path))

    card = tmp_path / "card.md"
    card.write_text("# Model card\n\n## Recipe\n\nkept\n\n## Quality\n\nold numbers\n\n## Licence\n\nold\n")
    monkeypatch.setattr(bundle, "_quality", lambda name: ["new numbers"])
    monkeypatch.setattr(bundle, "_files", lambda name: [type("E", (), {"card": card})])
    bundle.refresh(DEFAULT_MODEL)
    assert card.read_text().startswith("# Model card\n\n## Recipe\n\nkept\n\n## Quality\n\nnew numbers\n")
    assert "old" not in card.read_text() and bundle.LICENCE[DEFAULT_MODEL] in card.read_text()
    card.write_text("# Model card\n")
    with pytest.raises(SystemExit, match="no Quality section"):
        bundle.refresh(DEFAULT_MODEL)


def test_model_path_is_the_file_load_model_reads(tmp_path, monkeypatch):
    from glidekit.config import PRESETS
    from glidekit.io import model_path

    assert model_path(DEFAULT_MODEL) == bundled_path(DEFAULT_MODEL)
    monkeypatch.setenv("GLIDEKIT_CACHE", str(tmp_path))
    from glidekit.download import cache_dir

    assert model_path("base") == cache_dir() / PRESETS["base"].filename
    assert model_path(tmp_path / "mine.safetensors") == tmp_path / "mine.safetensors"


def test_emoji_card_puts_the_named_prompts_table_under_its_line():
    """scripts/bundle_model.py: the emoji card's Quality takes the report section's tables; the named
    prompts' table by guidance goes under the line that says what it counts, and a report from before
    that table gives the line alone."""
    from glidekit.eval.report import NAMED_TABLE_HEAD

    bundle = _bundle_script()
    metrics = "| metric | value |\n| --- | ---: |\n| FID | 85.35 |"
    named = f"{NAMED_TABLE_HEAD}\n| ---: | ---: | ---: | ---: | ---: | ---: |\n| 3 | 4/4 | 4/4 | 0/4 | 0/4 | 0/4 |"
    line = "Identified (top-5, as above) at guidance 3: red heart 4/4, grinning face 4/4, dog face 0/4, pizza 0/4, rocket 0/4."
    text = "\n".join(bundle._emoji_quality(f"## `emoji-64`\n\n{metrics}\n\nNamed prompts ...\n{line}\n\n{named}\n\n"))
    assert text.index(metrics) < text.index(line) < text.index(named) and text.count(NAMED_TABLE_HEAD) == 1
    assert "By guidance scale" in text and "Common prompts" not in text
    common = "Identified (top-5) in more than half their seeds: 21 of 30 prompts; samples identified: 70.0 %."
    text = "\n".join(bundle._emoji_quality(f"## `emoji-64`\n\n{metrics}\n\n{line}\n\n{named}\n\nCommon ...\n{common}\n"))
    assert text.index(named) < text.index(common) and "Common prompts (30 everyday emoji" in text
    old = "\n".join(bundle._emoji_quality(f"## `emoji-64`\n\n{metrics}\n\n{line}\n\n"))
    assert old.endswith(line) and metrics in old and "By guidance scale" not in old
    # from a whole report: the section only, not the next one's table (the inpainting section's)
    from glidekit.eval.report import TITLES, report_section

    hole = "| hole | filled by |\n| --- | --- |\n| centre square | `emoji-64` |"
    text = f"# R\n\n{TITLES['emoji']}\n\n{metrics}\n\n### Sub\n\n{line}\n\n{named}\n\n{TITLES['inpaint']}\n\n{hole}\n"
    cut = "\n".join(bundle._emoji_quality(report_section(text, "emoji")))
    assert metrics in cut and NAMED_TABLE_HEAD in cut and "| hole |" not in cut


def test_model_card_optimiser_line_names_a_cosine_schedule():
    """The card's optimiser line says when the learning rate decayed (lr_schedule=cosine), to what and by when."""
    bundle = _bundle_script()
    cfg = {"lr": 1e-4, "warmup_steps": 100, "lr_schedule": "constant", "lr_min": 0.0, "max_steps": 3000}
    assert bundle._lr(cfg) == "lr 0.0001 (linear warm-up 100 steps)"
    cfg |= {"lr_schedule": "cosine", "lr_min": 1e-6}
    assert bundle._lr(cfg) == "lr 0.0001 (linear warm-up 100 steps, then cosine down to 1e-06 at step 3,000)"


@pytest.mark.parametrize("content, says", [("{not json", "cannot read"), ('[{"preset": "base"}]', "each with preset, recipe")])
def test_bundle_model_refuses_bad_prior_stages_in_one_line(tmp_path, monkeypatch, capsys, content, says):
    """--prior-stages that is not JSON, or stages without the fields a card needs, is one clear line and exit 2,
    before any weights are written."""
    bundle = _bundle_script()
    run = tmp_path / "run"
    (run / "checkpoints" / "step-0000010").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step-0000010")
    (run / "config.json").write_text(json.dumps(train_config_to_dict(resolve_train_config("shapes-32", []))))
    prior = tmp_path / "prior.json"
    prior.write_text(content)
    monkeypatch.setattr(bundle, "convert_checkpoint", lambda *a, **k: pytest.fail("wrote weights"))
    monkeypatch.setattr("sys.argv", ["bundle_model.py", "shapes", str(run), "--preset", "shapes-32", "--prior-stages", str(prior)])
    assert bundle.main() == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_inpainting_card_quality_reads_the_reports_inpainting_section():
    """scripts/bundle_model.py: the emoji-64-inpaint card's Quality is the report section's first paragraph,
    its table and its paired differences."""
    from glidekit.eval.report import TITLES, report_section

    bundle = _bundle_script()
    section = (f"{TITLES['inpaint']}\n\nModels `m`. What was measured.\n\n| hole | filled by |\n| --- | --- |\n"
               "| centre square | m |\n\nThe inpainting model minus the base model: +1 dB.\n\nPer hole, a grid.\n")
    report = f"# Results\n\n{TITLES['emoji']}\n\ny\n\n" + section + "\n## Next\n\nz\n"
    text = "\n".join(bundle.REPORT_SECTION["emoji-64-inpaint"][1](report_section(report, "inpaint")))
    assert text.startswith("From [docs/results.md](../../docs/results.md), its inpainting section: Models `m`.")
    assert "| centre square | m |\n\nThe inpainting model minus the base model: +1 dB." in text
    assert "grid" not in text and "Next" not in text


@pytest.mark.parametrize("name", [n for n, m in BUNDLED.items() if not m.kind.startswith("clip")])
def test_model_card_recipe_rebuilds_the_model_the_file_holds(name):
    """The last command in a card's Recipe resolves (preset + overrides) to exactly the model config stored
    in the bundled file: a reader who runs it trains this architecture, not a placeholder."""
    import shlex

    commands = _card_recipe(name)
    assert commands and all(c.startswith(("glide train ", "python scripts/")) for c in commands), commands
    preset, *overrides = shlex.split(commands[-1])[2:]
    stored = load_checkpoint(bundled_path(name))[1]
    assert resolve_train_config(preset, overrides).model == stored


def test_report_section_of_an_earlier_file_is_not_a_cards_quality(tmp_path, monkeypatch):
    """A card whose Quality is a docs/results.md section takes it only when the section's model line names
    the bundled file as it is now (`report.model_line`): a re-bundled model whose report was not run again
    says it is not measured, not the earlier file's numbers."""
    from glidekit.eval.report import TITLES, model_line

    bundle = _bundle_script()
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(bundle, "REPO", tmp_path)
    report = tmp_path / "docs" / "results.md"

    def quality_from(line: str) -> list[str]:
        report.write_text(f"# Results\n\n{TITLES['emoji']}\n\nModel {line}.\n\n| measure | value |\n"
                          "| --- | ---: |\n| FID | 1.00 |\n")
        return bundle._quality("emoji-64")

    now = model_line("emoji-64")
    assert "| FID | 1.00 |" in "\n".join(quality_from(now))
    earlier = now.replace("sha256 `", "sha256 `0")  # another file's fingerprint
    assert quality_from(earlier) == ["Not measured yet: run `make results` (docs/results.md)."]


def test_every_bundled_card_is_measured_and_current():
    """Each name bundle_model accepts finds its card's Quality (report section, report rows, sweep or CLIP
    retrieval), and its shipped card says what bundle_model would write now: its Data, and its Quality,
    Limitations and Licence as `--refresh` writes them from today's measurements (a card edited in the
    script but not rewritten, or a file whose measurement is of an older version, fails). A name with no
    measurement is one clear line, not another model's section."""
    bundle = _bundle_script()
    for name in bundle.DATA:  # the repo's report, CSVs and CLIP files measure every one of them
        measured = bundle._measured(name)
        assert not measured[2].startswith("Not measured yet"), name
        card = bundle._files(name)[0].card.read_text()
        stages = bundle.file_stages(bundle._files(name)[0].path) or []
        assert f"## Data\n\n{bundle.data_text(name, stages)}\n" in card, name
        assert "\n".join(measured) in card, name
    with pytest.raises(SystemExit, match="no measurement of emoji-128"):
        bundle._quality("emoji-128")
