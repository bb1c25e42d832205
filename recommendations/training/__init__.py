"""The training package: the only place that imports TensorFlow, pandas and scipy.

It runs on the `ml` queue (recommendations.tasks) and in the train_recommendations
command; the web process (models, admin, selectors, API) never imports it.
Modules: data (arrays, dedupe, split), collect (PostgreSQL -> storage), model (the
Keras model), neighbours (top-k per product), evaluate (metrics and baselines),
rerank (popularity debiasing of the lists, tuned on the validation split), trending,
pipeline (the stages, versioning), sasrec (a sequence-model candidate, bench only).
"""
