"""Avro schemas of Photon-ML's training records and linear models, as Python dicts.

These are the record layouts Photon-ML (and LinkedIn's GDMix) read and write, written
out here so that gdmix can read and write them with ``fastavro`` without Photon's
schema files:

- :data:`NAME_TERM_VALUE`: one feature or one coefficient, ``{name, term, value}``.
- :func:`training_example_schema`: one training record: the response (``label`` in
  Photon's ``TrainingExampleAvro``; GAME data usually calls it ``response``), optional
  ``uid``, ``weight`` and ``offset``, one or more feature bags (arrays of
  name-term-value records), and an optional ``metadataMap`` of strings (where GAME data
  keeps entity ids). :data:`TRAINING_EXAMPLE` is Photon's own layout.
- :data:`BAYESIAN_LINEAR_MODEL`: one linear model: ``modelId``, ``modelClass``,
  ``means`` and optional ``variances`` (name-term-value lists), ``lossFunction``
  (:data:`MODEL_CLASSES` and :data:`LOSS_FUNCTIONS` by gdmix task).

The intercept of a Photon model is the coefficient named :data:`INTERCEPT_NAME` with
term :data:`INTERCEPT_TERM`.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "BAYESIAN_LINEAR_MODEL",
    "INTERCEPT_NAME",
    "INTERCEPT_TERM",
    "LOGISTIC_LOSS",
    "LOGISTIC_MODEL_CLASS",
    "LOSS_FUNCTIONS",
    "MODEL_CLASSES",
    "NAMESPACE",
    "NAME_TERM_VALUE",
    "TRAINING_EXAMPLE",
    "training_example_schema",
]

#: Namespace of Photon's generated Avro classes.
NAMESPACE = "com.linkedin.photon.avro.generated"
#: Name and term of the intercept among a Photon model's coefficients.
INTERCEPT_NAME = "(INTERCEPT)"
INTERCEPT_TERM = ""
#: ``modelClass`` of each gdmix task's models.
MODEL_CLASSES = {
    "logistic": "com.linkedin.photon.ml.supervised.classification.LogisticRegressionModel",
    "linear": "com.linkedin.photon.ml.supervised.regression.LinearRegressionModel",
    "poisson": "com.linkedin.photon.ml.supervised.regression.PoissonRegressionModel",
}
#: ``lossFunction`` of each gdmix task's models.
LOSS_FUNCTIONS = {
    "logistic": "com.linkedin.photon.ml.function.glm.LogisticLossFunction",
    "linear": "com.linkedin.photon.ml.function.glm.SquaredLossFunction",
    "poisson": "com.linkedin.photon.ml.function.glm.PoissonLossFunction",
}
#: ``modelClass`` and ``lossFunction`` of a logistic regression model.
LOGISTIC_MODEL_CLASS = MODEL_CLASSES["logistic"]
LOGISTIC_LOSS = LOSS_FUNCTIONS["logistic"]

NAME_TERM_VALUE: dict[str, Any] = {
    "type": "record",
    "name": "NameTermValueAvro",
    "namespace": NAMESPACE,
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "term", "type": "string"},
        {"name": "value", "type": "double"},
    ],
}

BAYESIAN_LINEAR_MODEL: dict[str, Any] = {
    "type": "record",
    "name": "BayesianLinearModelAvro",
    "namespace": NAMESPACE,
    "fields": [
        {"name": "modelId", "type": "string"},
        {"name": "modelClass", "type": ["null", "string"], "default": None},
        {"name": "means", "type": {"type": "array", "items": NAME_TERM_VALUE}},
        {
            "name": "variances",
            "type": ["null", {"type": "array", "items": "NameTermValueAvro"}],
            "default": None,
        },
        {"name": "lossFunction", "type": ["null", "string"], "default": None},
    ],
}


def training_example_schema(
    *,
    response: str = "response",
    bags: list[str] | tuple[str, ...] = ("features",),
    entities: list[str] | tuple[str, ...] = (),
    metadata_map: bool = True,
    name: str = "TrainingExampleAvro",
) -> dict[str, Any]:
    """The schema of a Photon/GAME training record.

    Parameters
    ----------
    response : str
        Name of the response field (a double).
    bags : list of str
        Feature bag fields, each an array of name-term-value records.
    entities : list of str
        Top-level entity id fields (strings, may be null); GAME data often keeps them
        in ``metadataMap`` instead.
    metadata_map : bool
        Include the optional ``metadataMap`` field (a map of strings).
    name : str
        The record's name.

    Returns
    -------
    dict
        An Avro schema for ``fastavro.parse_schema``.
    """
    if not bags:
        raise ValueError("a training record needs at least one feature bag")
    item: Any = copy.deepcopy(NAME_TERM_VALUE)
    fields: list[dict[str, Any]] = [
        {"name": "uid", "type": ["null", "string"], "default": None},
        {"name": response, "type": "double"},
    ]
    for bag in bags:
        fields.append({"name": bag, "type": {"type": "array", "items": item}})
        item = f"{NAMESPACE}.NameTermValueAvro"  # defined once, referred to after
    for entity in entities:
        fields.append({"name": entity, "type": ["null", "string"], "default": None})
    if metadata_map:
        fields.append(
            {
                "name": "metadataMap",
                "type": ["null", {"type": "map", "values": "string"}],
                "default": None,
            }
        )
    fields += [
        {"name": "weight", "type": ["null", "double"], "default": None},
        {"name": "offset", "type": ["null", "double"], "default": None},
    ]
    return {"type": "record", "name": name, "namespace": NAMESPACE, "fields": fields}


#: Photon's ``TrainingExampleAvro``: response ``label``, one bag ``features``.
TRAINING_EXAMPLE: dict[str, Any] = training_example_schema(response="label")
