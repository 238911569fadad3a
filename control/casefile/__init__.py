"""The case file (卷宗): one timeline per case of everything that happened
(:mod:`.timeline`), over HTTP (:mod:`.api`), and the case package that ``remotecase case
export`` writes and ``remotecase case verify`` checks offline (:mod:`.package`,
:mod:`.verify`). docs/casefile.md describes it."""
