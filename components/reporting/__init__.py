"""Reporting: the matplotlib figures of ``report`` and ``summary`` (``figures``), the pooling of every pipeline
seed for ``summary`` (``aggregate``), the offline render
of the ``dvc.yaml`` plots (``dvc_plots``) and AVGN's report tables (``avgn_tables``). It may import
every other library package and ``components.core``; never a stage, a flow or the app.
"""
