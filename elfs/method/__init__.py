"""The method's feature modules, below its stages: the frozen encoders (backbones), the embeddings (embed), the
cosine nearest neighbours (knn), k-means, the near-copy groups (duplicates) and the diagnostic's mixed labels.
TEMI (cluster/), the proxy's dynamics (dynamics/), the classifier training (training/) and the selectors'
maths (select/) are the method's other rooms. Imports nothing at package level, so a stage's code version holds
only the modules it runs."""
