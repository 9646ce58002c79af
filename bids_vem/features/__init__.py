"""The feature stage: model specs, offline model loading, text and image encoders, feature cache.

Modules: ``specs`` (parse ``[name=]family:model[@weights]``), ``models`` (find and load weights,
offline first), ``text`` / ``image`` (encoders per family), ``cache`` (content-addressed
FeatureSet cache), ``extract`` (one feature space over the stimuli + derivative files),
``feature_set`` (the FeatureSet dataclass). Importing this package loads no model library.
"""
