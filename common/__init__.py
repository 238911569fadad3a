"""Small parts every package may use: file hashing and canonical JSON (:mod:`common.hashing`),
durable writes (:mod:`common.files`) and task ownership (:mod:`common.tasks`).

Nothing here imports another package of the project.
"""
