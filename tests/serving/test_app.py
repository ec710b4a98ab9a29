"""The HTTP API as a client uses it: a tiny trained model served on loopback, requests with
httpx, answers checked against what ``tools/predict.py`` writes for the same image."""

import hashlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from d2seg.engine.predictor import DefaultPredictor, run_weights
from d2seg.serving import ServeSettings, create_app

pytestmark = pytest.mark.slow  # a model trained once for the module, servers started per test


@pytest.fixture(scope="module")
def predictor(balloon_run) -> DefaultPredictor:
    return DefaultPredictor.from_run(balloon_run["run"])


@pytest.fixture(scope="module")
def photo(balloon_run):
    return sorted(balloon_run["images"].glob("*.jpg"))[0]


def test_answers_are_the_records_and_pictures_predict_writes(balloon_run, photo, serve,
                                                              run_tool, tmp_path):
    code, _, err = run_tool("predict", "--run", balloon_run["run"], "--input", photo, "--output",
                            tmp_path / "out", "--save-labelme", "--polygons")
    assert code == 0, err
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert written, "the tiny model must find something for this test to mean anything"
    expected = [{k: v for k, v in r.items() if k not in ("image_id", "file_name")}
                for r in written]
    with serve(create_app(balloon_run["run"])) as url:
        raw = httpx.post(f"{url}/v1/predict?polygons=true", content=photo.read_bytes(),
                         headers={"Content-Type": "image/jpeg"}, timeout=60)
        multipart = httpx.post(f"{url}/v1/predict?polygons=true",
                               files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
                               timeout=60)
        overlay = httpx.post(f"{url}/v1/predict?render=overlay", content=photo.read_bytes(),
                             headers={"Content-Type": "image/jpeg"}, timeout=60)
        labelme = httpx.post(f"{url}/v1/predict?render=labelme",
                             files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
                             timeout=60)
    for response in (raw, multipart):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["image"] == {"width": 128, "height": 96}
        assert answer["model"]["thing_classes"] == answer["model"]["classes"] == ["balloon"]
        assert answer["model"]["tasks"] == ["instances"]
        assert set(answer["timing_ms"]) == {"decode", "queue", "inference", "encode", "total"}
        got = answer["instances"]
        assert [{k: r[k] for k in ("category_id", "category_name", "segmentation", "polygons")}
                for r in got] == [{k: r[k] for k in ("category_id", "category_name",
                                                     "segmentation", "polygons")}
                                  for r in expected]
        assert all(r["label"] == r["category_name"] for r in got)
        for a, b in zip(got, expected):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
            assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
    assert overlay.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(overlay.content)))
    assert np.array_equal(drawn, np.asarray(Image.open(tmp_path / "out" / "overlays" /
                                                       f"{photo.stem}.png")))
    document = labelme.json()
    on_disk = json.loads((tmp_path / "out" / "labelme" / f"{photo.stem}.json").read_text())
    assert document["shapes"] == on_disk["shapes"] and document["shapes"]
    assert document["imagePath"] == photo.name
    assert document["imageData"]  # embedded: the client opens it in Labelme as it is


def test_threshold_health_model_and_errors_as_json(balloon_run, predictor, photo, serve,
                                                   bad_uploads):
    scores = sorted(float(s) for s in predictor(np.array(Image.open(photo)))["instances"]
                    ["scores"])
    assert len(scores) >= 2
    middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    weights = run_weights(balloon_run["run"])
    settings = ServeSettings(max_bytes=200_000)
    with serve(create_app(predictor, settings)) as url:
        post = lambda query="", **kw: httpx.post(f"{url}/v1/predict{query}", timeout=60, **kw)
        kept = post(f"?score_threshold={middle}", content=photo.read_bytes(),
                    headers={"Content-Type": "image/jpeg"}).json()["instances"]
        assert sorted(r["score"] for r in kept) == pytest.approx(
            [s for s in scores if s >= middle], abs=1e-5)
        assert "polygons" not in kept[0]
        health = httpx.get(f"{url}/v1/health").json()
        assert health == {"status": "ok", "model_loaded": True, "queue_depth": 0}
        model = httpx.get(f"{url}/v1/model").json()
        assert model["weights"] == {"file": weights.name,
                                    "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
        assert model["input_format"] == "RGB" and model["thing_classes"] == ["balloon"]
        for name, (body, content_type, status) in bad_uploads.items():
            response = post(content=body, headers={"Content-Type": content_type})
            assert response.status_code == status, (name, response.text)
            error = response.json()
            assert error["error"]["status"] == status and "fix:" in error["error"]["message"]
            assert error["request_id"] == response.headers["x-request-id"]
        invalid = post("?score_threshold=2", content=photo.read_bytes(),
                       headers={"Content-Type": "image/jpeg"})
        assert invalid.status_code == 422 and "score_threshold" in invalid.json()["error"][
            "message"]
        missing = post(files={"photo": ("a.jpg", photo.read_bytes(), "image/jpeg")})
        assert missing.status_code == 422 and "'file'" in missing.json()["error"]["message"]
        gray = io.BytesIO()
        Image.fromarray(np.zeros((20, 30, 2), np.uint8)[:, :, 0]).save(gray, format="TIFF")
        import tifffile

        two_bands = io.BytesIO()
        tifffile.imwrite(two_bands, np.zeros((20, 30, 2), np.uint8))
        wrong = post(content=two_bands.getvalue(), headers={"Content-Type": "image/tiff"})
        assert wrong.status_code == 422 and "2 band(s)" in wrong.json()["error"]["message"]
        assert "d2seg-upload" not in wrong.text  # no server-side path in messages
        ok = post(content=gray.getvalue(), headers={"Content-Type": "image/tiff"})
        assert ok.status_code == 200 and ok.json()["image"] == {"width": 30, "height": 20}
        assert httpx.get(f"{url}/v1/nothing").json()["error"]["status"] == 404
        assert "access-control-allow-origin" not in httpx.get(
            f"{url}/v1/health", headers={"Origin": "http://elsewhere.example"}).headers


def test_token_guards_everything_but_health_and_the_page(predictor, photo, serve):
    settings = ServeSettings(token="s3cret-token", cors_origins=("http://lab.example",))
    with serve(create_app(predictor, settings)) as url:
        assert httpx.get(f"{url}/v1/health").status_code == 200
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "<canvas" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert httpx.get(f"{url}/static/page.js").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            for response in (httpx.get(f"{url}/v1/model", headers=headers),
                             httpx.get(f"{url}/openapi.json", headers=headers),
                             httpx.post(f"{url}/v1/predict", content=photo.read_bytes(),
                                        headers={**headers, "Content-Type": "image/jpeg"})):
                assert response.status_code == 401, (headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret-token"}
        assert httpx.get(f"{url}/v1/model", headers=good).status_code == 200
        assert httpx.post(f"{url}/v1/predict", content=photo.read_bytes(), timeout=60,
                          headers={**good, "Content-Type": "image/jpeg"}).status_code == 200
        preflight = httpx.options(f"{url}/v1/predict", headers={
            "Origin": "http://lab.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://lab.example"


class _SlowPredictor:
    """A predictor whose batches take ``seconds`` longer (``busy`` meanwhile) and that records
    their sizes; with ``fail`` it raises."""

    def __init__(self, predictor: DefaultPredictor, seconds: float, fail: bool = False):
        self.inner, self.seconds, self.fail = predictor, seconds, fail
        self.batch_sizes: list[int] = []
        self.busy = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_batch(self, images, format=None):
        self.batch_sizes.append(len(images))
        self.busy = True
        time.sleep(self.seconds)
        self.busy = False
        if self.fail:
            raise RuntimeError("a bug deep inside the model: /secret/path.py line 3")
        return self.inner.predict_batch(images, format)


def test_batches_queue_limit_and_health_while_busy(predictor, photo, serve):
    slow = _SlowPredictor(predictor, 1.0)
    body = photo.read_bytes()
    settings = ServeSettings(max_batch=4, batch_timeout_ms=300, max_queue=2)
    with serve(create_app(slow, settings)) as url:
        def post(_):
            return httpx.post(f"{url}/v1/predict", content=body, timeout=60,
                              headers={"Content-Type": "image/jpeg"})

        with ThreadPoolExecutor(12) as pool:
            pending = [pool.submit(post, i) for i in range(12)]
            deadline = time.monotonic() + 60
            while not slow.busy and time.monotonic() < deadline:
                time.sleep(0.01)
            health = httpx.get(f"{url}/v1/health", timeout=10)
            answered_while_busy = slow.busy
            responses = [p.result() for p in pending]
    statuses = sorted(r.status_code for r in responses)
    assert health.status_code == 200 and answered_while_busy
    assert statuses.count(503) >= 1 and set(statuses) == {200, 503}, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert int(busy.headers["retry-after"]) >= 1 and "busy" in busy.json()["error"]["message"]
    assert max(slow.batch_sizes) > 1
    sizes = [r.json()["batch_size"] for r in responses if r.status_code == 200]
    assert max(sizes) > 1 and sum(slow.batch_sizes) == len(sizes)


def test_an_internal_error_is_a_json_500_without_a_traceback(predictor, photo, serve):
    with serve(create_app(_SlowPredictor(predictor, 0.0, fail=True))) as url:
        response = httpx.post(f"{url}/v1/predict", content=photo.read_bytes(), timeout=60,
                              headers={"Content-Type": "image/jpeg"})
        assert httpx.get(f"{url}/v1/health").json()["status"] == "ok"
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "internal error; the server log has the details"
    assert "Traceback" not in response.text and "secret" not in response.text


def test_a_run_that_cannot_load_is_reported_by_health(tmp_path, serve):
    with serve(create_app(tmp_path / "no_run")) as url:
        health = httpx.get(f"{url}/v1/health").json()
        predict = httpx.post(f"{url}/v1/predict", content=b"x",
                             headers={"Content-Type": "image/jpeg"})
    assert health["status"] == "error" and not health["model_loaded"]
    assert "config.yaml not found" in health["error"]
    assert predict.status_code == 503 and "could not be loaded" in predict.json()["error"][
        "message"]


def test_openapi_docs_work_offline(predictor, serve):
    with serve(create_app(predictor)) as url:
        docs = httpx.get(f"{url}/docs")
        assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
        assert "cdn." not in docs.text and "https://" not in docs.text.split("<body>")[0]
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            response = httpx.get(f"{url}/docs-static/{asset}")
            assert response.status_code == 200 and len(response.content) > 100_000
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        assert {"/v1/predict", "/v1/health", "/v1/model"} <= set(paths)
