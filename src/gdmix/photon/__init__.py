"""Photon-ML interop: Photon's Avro training records and linear models.

- Reading Photon/GAME training records: any table path may be an ``.avro`` file, a
  folder of them, or a day range of a date-partitioned folder (see
  :mod:`gdmix.data.avro` and :mod:`gdmix.data.dated`).
- :func:`export_model` writes a model's fixed and random coordinates as Photon
  ``BayesianLinearModelAvro`` files; :func:`import_model` reads such files back as a
  :class:`gdmix.GDMixModel`.
- :mod:`gdmix.photon.schemas` holds the Avro schemas; :mod:`gdmix.photon.names` the
  name/term mapping of gdmix's features.

Needs the ``fastavro`` package (``pip install gdmix[avro]``).
"""

from gdmix.photon.export import export_model, linear_records
from gdmix.photon.imports import import_model, read_linear_models
from gdmix.photon.names import column_keys

__all__ = ["column_keys", "export_model", "import_model", "linear_records", "read_linear_models"]
