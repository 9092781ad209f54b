"""The step breakdown of the appendix "Scaling out" (``mmoe_annotated.bench.step_breakdown``): the
gradient size it counts, the speedup model it applies, the shipped measurement the appendix reads,
and one quick run of the measurement itself (its schema, never its timings)."""
from __future__ import annotations

import pytest

from mmoe_annotated.bench import step_breakdown as sb
from mmoe_annotated.data.example import ByteRecSizes
from mmoe_annotated.features.encoders import NUM_RESERVED


def _catalog_ids(sizes: ByteRecSizes) -> int:
    return (sizes.users + sizes.items + sizes.authors + sizes.music + 2 * sizes.cities + sizes.devices
            + sizes.channels)


@pytest.mark.parametrize("name", list(sb.CONFIGS))
def test_gradient_bytes_is_four_bytes_per_parameter_and_the_table_holds_the_catalog(name):
    spec = sb.CONFIGS[name]
    model = sb.build(spec["sizes"], spec["emb_dim"])
    parameters = sum(p.numel() for p in model.parameters())
    assert sb.gradient_bytes(model) == 4 * parameters
    sizes = ByteRecSizes() if spec["sizes"] == "default" else ByteRecSizes.like_real()
    rows = model.inputs.table.weight.shape[0]
    assert rows == _catalog_ids(sizes) + 8 * NUM_RESERVED  # every ID, plus 3 reserved ids per field
    assert model.inputs.table.weight.shape[1] == spec["emb_dim"]


def test_the_real_size_model_sends_about_12_7_mib_a_step_93_percent_of_it_the_table():
    model = sb.build("like_real", 16)
    total, table = sb.gradient_bytes(model), 4 * model.inputs.table.weight.numel()
    assert 12.5 < total / 2**20 < 12.8
    assert 0.92 < table / total < 0.94


def test_the_model_adds_compute_optimizer_and_a_ring_all_reduce():
    config = {"gradient_bytes": 8_000_000, "optimizer_ms": 2.0,
              "compute_ms": {"1": 40.0, "2": 22.0, "4": 12.0, "8": 7.0}}
    one = sb.predicted_ms(config, 1, bandwidth=1e9, latency_ms=0.1)
    assert one == {"compute": 40.0, "optimizer": 2.0, "allreduce": 0.0, "step": 42.0}  # nothing to send
    four = sb.predicted_ms(config, 4, bandwidth=1e9, latency_ms=0.1)
    # 2 (N - 1) messages, 2 (N - 1) / N of the gradient sent per process
    assert four["allreduce"] == pytest.approx(6 * 0.1 + 1.5 * 8_000_000 / 1e9 * 1e3)
    assert four["step"] == pytest.approx(12.0 + 2.0 + four["allreduce"])
    assert sb.speedup(config, 4, 1e9, 0.1) == pytest.approx(42.0 / four["step"])
    # an infinitely fast link leaves compute and the optimizer step: Amdahl's floor
    assert sb.speedup(config, 8, float("inf"), 0.0) == pytest.approx(42.0 / 9.0)
    with pytest.raises(KeyError, match="no compute time for 16 processes"):
        sb.predicted_ms(config, 16, 1e9, 0.1)


def test_the_shipped_measurement_records_what_made_it_and_matches_the_models():
    found = sb.load_results()
    for key in ("package_version", "commit", "torch_version", "device", "machine", "command"):
        assert found[key], key
    assert found["command"].startswith("python -m mmoe_annotated.bench.step_breakdown")
    assert found["machine"]["torch_threads"] == 1
    assert set(found["configs"]) == set(sb.CONFIGS)
    for name, c in found["configs"].items():
        model = sb.build(c["sizes"], c["emb_dim"])
        assert c["parameters"] == sum(p.numel() for p in model.parameters())
        assert c["gradient_bytes"] == sb.gradient_bytes(model)
        assert c["table_parameters"] == model.inputs.table.weight.numel()
        assert set(c["compute_ms"]) == {str(n) for n in found["processes"]}
        assert all(t > 0 for t in c["compute_ms"].values()) and c["optimizer_ms"] > 0
        assert c["allreduce"]["world_size"] == 2 and c["allreduce"]["ms"] > 0
        assert c["allreduce"]["bandwidth_bytes_per_s"] > 0


def test_a_quick_measurement_has_every_part(tmp_path):
    out = tmp_path / "breakdown.json"
    assert sb.main(["--configs", "embedded catalog, K=4", "--repeats", "1", "--json", str(out)]) == 0
    import json

    found = json.loads(out.read_text())
    c = found["configs"]["embedded catalog, K=4"]
    assert found["command"] == ("python -m mmoe_annotated.bench.step_breakdown --configs "
                                f"'embedded catalog, K=4' --repeats 1 --json {out}")
    assert set(c["compute_ms"]) == {"1", "2", "4", "8"} and c["allreduce"]["ms"] > 0
    assert found["latency_ms"] > 0
