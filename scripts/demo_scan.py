"""Rule demo_scan: one synthetic T1w scan of the demo dataset."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.synthetic import DemoSpec, write_demo_subject

write_demo_subject(
    snakemake.params.out_dir,
    DemoSpec(**snakemake.params.spec),
    seed=snakemake.params.seed,
    participant_id=snakemake.params.participant,
    session_id=snakemake.params.session,
)
