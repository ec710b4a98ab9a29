"""What :func:`build_job` tells the user before any trial: the stale-BatchNorm warning."""

from d2seg.tuning.job import build_job

from .conftest import UNET


def test_a_study_evaluating_stale_batchnorm_statistics_is_warned_once_with_the_fix(
        unet_opts, space_file, tmp_path):
    space = space_file("SOLVER.BASE_LR: {loguniform: [1.0e-4, 1.0e-2]}\n")
    job = build_job(UNET, str(space), opts=unet_opts, output=tmp_path / "study")
    assert len(job.warnings) == 1
    assert job.warnings[0].startswith("TEST.EVAL_PERIOD 2: ")
    assert "TEST.PRECISE_BN.ENABLED True" in job.warnings[0]

    precise = build_job(UNET, str(space), opts=[*unet_opts, "TEST.PRECISE_BN.ENABLED", "True",
                                                "TEST.PRECISE_BN.NUM_ITER", "2"],
                        output=tmp_path / "study")
    assert precise.warnings == ()
    assert not (tmp_path / "study").exists()  # checks create nothing
