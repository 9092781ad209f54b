"""Stage 2, the features: raw columns turned into what the model reads.

================  ==================================================================  =======
module            what                                                                chapter
================  ==================================================================  =======
``encoders``      one column each: :class:`Vocabulary`, :class:`HashBuckets`,          3
                  :class:`MinMax`
``encoder``       :class:`FeatureEncoder`: every column of a frame, fitted once         3
``inputs``        feature specs, :class:`EncodedFeatures` and the embedding lookup     3
================  ==================================================================  =======
"""
from __future__ import annotations

from .._moved import stage_getattr
from .encoder import FeatureEncoder
from .encoders import MISSING, NUM_RESERVED, OOV, PAD, HashBuckets, MinMax, Vocabulary
from .inputs import DenseFeature, EncodedFeatures, FeatureSpec, InputLayer, SparseFeature, input_dim

__all__ = ["FeatureEncoder", "Vocabulary", "HashBuckets", "MinMax", "PAD", "OOV", "MISSING",
           "NUM_RESERVED", "SparseFeature", "DenseFeature", "FeatureSpec", "EncodedFeatures",
           "InputLayer", "input_dim"]

# Release 0.1 had a module features.py; the names it held that this stage does not list still
# resolve, with a DeprecationWarning, for one release (mmoe_annotated._moved).
__getattr__ = stage_getattr(__name__, ("mmoe_annotated.features.encoder", "mmoe_annotated.features.encoders"))
