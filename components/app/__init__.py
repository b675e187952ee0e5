"""The application, the top layer: the ``salient`` CLI (``cli``), online inference on video files
(``predict``) and the commands that run the pipeline as a whole — the extraction benchmark
(``bench_extract``), the DDP benchmark (``bench_ddp``), the development-loop timings (``bench_loop``),
a benchmark profile run end to end (``profile_run``) and the robustness sweep over one param
(``robustness``). It may import anything: flows, stages and the library; nothing imports it.
"""
