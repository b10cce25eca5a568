"""`leanvision detect predict` on videos and folders of frames: JSON lines, annotated video, --classes, --alert."""

import json

import cv2
import numpy as np
import pytest
import torch

from leanvision.cli import main
from leanvision.detect import stream
from leanvision.detect.alerts import AlertRule, format_event
from leanvision.detect.predict import detect_images, load_for_predict, resolve_classes
from leanvision.detect.val import build_detector, detector_spec

NAMES = ["Hardhat", "NO-Hardhat", "NO-Safety Vest", "Person"]
FPS, N_FRAMES, W, H = 12.0, 12, 96, 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An untrained yolov8n checkpoint in `detect train`'s format (64 px, the site classes) whose class logits start
    at 0 instead of the rare-object prior, so that random frames give boxes of several classes above conf 0.25."""
    torch.manual_seed(0)
    spec = detector_spec("yolov8n", NAMES, {})
    model = build_detector(spec)
    with torch.no_grad():
        for head in model.head.cv3:
            head[2].bias.zero_()
    path = tmp_path_factory.mktemp("weights") / "best.pt"
    torch.save({"config": {"detector": spec, "imgsz": 64},
                "method": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def _frames(n=N_FRAMES, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "site.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for f in _frames():
        w.write(f)
    w.release()
    return path


def _predict(weights, source, out, *extra):
    return main(["detect", "predict", "--weights", str(weights), "--source", str(source), "--project", str(out),
                 "--name", "p", "--no-progress", "--device", "cpu", *extra])


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_video_gives_one_json_line_per_frame_with_time_from_fps(weights, video, tmp_path, capsys):
    assert _predict(weights, video, tmp_path) == 0
    recs = _lines(tmp_path / "p" / "frames.jsonl")
    assert [r["frame"] for r in recs] == list(range(N_FRAMES))
    assert [r["time"] for r in recs] == [round(i / FPS, 3) for i in range(N_FRAMES)]
    dets = [d for r in recs for d in r["detections"]]
    assert dets and {d["name"] for d in dets} <= set(NAMES)
    assert all(d["name"] == NAMES[d["class"]] and 0.25 < d["score"] <= 1 for d in dets)
    boxes = np.array([d["box"] for d in dets])  # in the 96×64 frame's pixels, not the 64×64 input's
    assert boxes[:, [0, 2]].max() > 64 and boxes[:, [0, 2]].max() <= W and boxes[:, [1, 3]].max() <= H
    out = capsys.readouterr().out
    assert f"{N_FRAMES} frames in" in out and "frames/s" in out
    assert not list((tmp_path / "p").glob(".*"))  # no temporary file left


def test_video_frames_get_the_image_path_detections(weights, video, tmp_path):
    """A frame of the video gives exactly what `detect_images` (the image predict path) gives on that decoded
    frame: one preprocessing, batching does not change the result."""
    assert _predict(weights, video, tmp_path, "--batch", "5") == 0
    recs = _lines(tmp_path / "p" / "frames.jsonl")
    cap = cv2.VideoCapture(str(video))
    decoded = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(N_FRAMES)]
    det = load_for_predict(weights, "cpu")
    for i in (0, 7, 11):
        [(boxes, cls, scores)] = detect_images(det, [decoded[i]], conf=0.25)
        got = recs[i]["detections"]
        assert len(got) == len(boxes) > 0
        np.testing.assert_allclose([d["box"] for d in got], boxes.numpy(), atol=0.02)
        assert [d["class"] for d in got] == cls.tolist()


def test_annotated_video_has_the_frames_size_and_fps_of_the_source(weights, video, tmp_path):
    assert _predict(weights, video, tmp_path) == 0
    cap = cv2.VideoCapture(str(tmp_path / "p" / "site.mp4"))
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (W, H)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == N_FRAMES


def test_classes_keeps_only_the_named_classes(weights, video, tmp_path):
    assert _predict(weights, video, tmp_path / "all") == 0
    assert _predict(weights, video, tmp_path / "some", "--classes", "NO-Safety Vest,0") == 0
    everything = _lines(tmp_path / "all" / "p" / "frames.jsonl")
    some = _lines(tmp_path / "some" / "p" / "frames.jsonl")
    kept = {d["class"] for r in some for d in r["detections"]}
    assert kept and kept <= {0, 2}
    # NMS is per class and no frame reaches max_det, so filtering equals dropping the other classes afterwards
    for a, b in zip(everything, some):
        assert b["detections"] == [d for d in a["detections"] if d["class"] in (0, 2)]


def test_resolve_classes_by_name_id_and_case():
    assert resolve_classes(["NO-Safety Vest", "person,1"], NAMES) == [1, 2, 3]
    assert resolve_classes(None, NAMES) is None


def test_unknown_class_is_one_line_listing_the_checkpoint_classes(weights, video, tmp_path, capsys):
    assert _predict(weights, video, tmp_path, "--alert", "NO-Helmet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--alert" in err and "'NO-Helmet'" in err
    assert all(repr(n) in err for n in NAMES)
    assert _predict(weights, video, tmp_path, "--classes", "7") == 2
    assert "'7'" in capsys.readouterr().err


def test_alert_fires_once_per_appearance_with_the_gap_rule():
    """At 4 fps with a 1 s gap: frames 0-5 present (one event), 6-8 absent (3 frames = 0.75 s < 1 s: the same
    appearance at 9), 10-13 absent (4 frames = 1 s: a new event at 14); the event takes the frame's best box."""
    rule = AlertRule([1], NAMES, fps=4, gap=1.0)
    present = set(range(0, 6)) | {9} | {14, 15}
    frame_dets = ([1, 1, 3], [0.4, 0.9, 0.99], [[0, 0, 1, 1], [2, 2, 3, 3], [5, 5, 6, 6]])
    events = []
    for f in range(16):
        events += rule.update(f, *(frame_dets if f in present else ([], [], [])))
    assert [(e["frame"], e["time"]) for e in events] == [(0, 0.0), (14, 3.5)]
    assert events[0] == {"time": 0.0, "frame": 0, "class": 1, "name": "NO-Hardhat", "score": 0.9,
                         "box": [2.0, 2.0, 3.0, 3.0]}
    assert format_event(events[1]) == "ALERT 0:00:03.500 frame 14: NO-Hardhat 0.90 at [2, 2, 3, 3]"


def test_alert_gap_zero_fires_on_every_return_and_classes_are_separate():
    rule = AlertRule([0, 2], NAMES, fps=10, gap=0)
    seq = [[0], [0], [], [0, 2], [0, 2], [2]]
    fired = [[e["class"] for e in rule.update(f, c, [0.5] * len(c), [[0, 0, 1, 1]] * len(c))]
             for f, c in enumerate(seq)]
    assert fired == [[0], [], [], [0, 2], [], []]


def test_alert_through_the_cli_writes_and_prints_one_event_per_appearance(weights, video, tmp_path, capsys,
                                                                        monkeypatch):
    """Scripted detections (the network replaced): 'NO-Safety Vest' in frames 0-3 and 9-11 at 12 fps; with
    --alert-gap 0.25 (3 frames) the 5-frame absence makes frame 9 a new event; 'Person' is not watched."""
    seen = []

    def scripted(det, imgs, *args, **kwargs):
        out = []
        for _ in imgs:
            f = len(seen)
            seen.append(f)
            rows = ([[10.0, 5, 30, 40, 0.8, 2]] if f < 4 or f >= 9 else []) + [[50.0, 5, 70, 60, 0.9, 3]]
            t = torch.tensor(rows)
            out.append((t[:, :4], t[:, 5].long(), t[:, 4]))
        return out

    monkeypatch.setattr(stream, "detect_images", scripted)
    assert _predict(weights, video, tmp_path, "--alert", "NO-Safety Vest", "--alert-gap", "0.25") == 0
    events = _lines(tmp_path / "p" / "events.jsonl")
    assert [(e["frame"], e["time"], e["name"]) for e in events] == [(0, 0.0, "NO-Safety Vest"),
                                                                   (9, 0.75, "NO-Safety Vest")]
    assert events[0]["box"] == [10.0, 5.0, 30.0, 40.0] and events[0]["score"] == pytest.approx(0.8)
    out = capsys.readouterr().out
    assert out.count("ALERT ") == 2 and "frame 9: NO-Safety Vest 0.80" in out and "2 alert events" in out


def test_folder_of_frames_is_a_stream_with_fps(weights, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(11, seed=3)
    for i, f in enumerate(frames):  # natural order: frame_2 before frame_10
        cv2.imwrite(str(folder / f"frame_{i}.png"), f)
    assert _predict(weights, folder, tmp_path, "--fps", "5") == 0
    recs = _lines(tmp_path / "p" / "frames.jsonl")
    assert [r["time"] for r in recs] == [round(i / 5, 3) for i in range(11)]
    det = load_for_predict(weights, "cpu")
    [(boxes, _, _)] = detect_images(det, [cv2.cvtColor(frames[10], cv2.COLOR_BGR2RGB)], conf=0.25)
    np.testing.assert_allclose([d["box"] for d in recs[10]["detections"]], boxes.numpy(), atol=0.02)
    cap = cv2.VideoCapture(str(tmp_path / "p" / "frames.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5) and cap.get(cv2.CAP_PROP_FRAME_COUNT) == 11


def test_folder_without_fps_stays_separate_images_and_alert_needs_a_stream(weights, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _frames(1)[0])
    assert _predict(weights, folder, tmp_path / "a", "--classes", "Person") == 0
    recs = json.loads((tmp_path / "a" / "p" / "predictions.json").read_text())
    assert (tmp_path / "a" / "p" / "a.png").is_file() and all(r["name"] == "Person" for r in recs)
    assert _predict(weights, folder, tmp_path / "b", "--alert", "Person") == 2
    assert "--fps" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"\x00" * 64 + b"not a video at all" * 50])
def test_a_video_that_cannot_be_decoded_is_a_one_line_error_naming_it(weights, tmp_path, capsys, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    assert _predict(weights, bad, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "p" / "frames.jsonl").exists()


def test_a_truncated_video_is_an_error_and_a_missing_one_too(weights, video, tmp_path, capsys):
    cut = tmp_path / "cut.mp4"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # mp4v in mp4: the index (moov) is at the end
    assert _predict(weights, cut, tmp_path) == 2
    assert str(cut) in capsys.readouterr().err
    assert _predict(weights, tmp_path / "nope.mkv", tmp_path) == 2
    assert "nope.mkv" in capsys.readouterr().err


def test_a_failed_run_leaves_no_output_file(weights, video, tmp_path, monkeypatch):
    calls = []

    def failing(det, imgs, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return detect_images(det, imgs, *args, **kwargs)

    monkeypatch.setattr(stream, "detect_images", failing)
    with pytest.raises(RuntimeError):
        stream.predict_stream(weights, video, tmp_path / "out", batch=4, alert=["Person"], progress=False)
    assert list((tmp_path / "out").iterdir()) == []  # neither the final names nor the temporary ones


def test_a_video_that_breaks_off_partway_warns_and_keeps_the_frames_read(weights, video, tmp_path, capsys):
    damaged = tmp_path / "damaged.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 3: len(data) // 2] = bytes(len(data) // 2 - len(data) // 3)  # frames zeroed out mid-file
    damaged.write_bytes(bytes(data))
    assert _predict(weights, damaged, tmp_path) == 0
    n = len(_lines(tmp_path / "p" / "frames.jsonl"))
    err = capsys.readouterr().err.strip()
    assert 0 < n < N_FRAMES
    assert err == (f"leanvision detect: warning: {damaged}: decoded {n} of the {N_FRAMES} frames the file announces; "
                   "the rest could not be read (damaged or truncated file?)")
