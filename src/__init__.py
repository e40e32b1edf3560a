"""icu-backdoor: backdoor (data-poisoning) studies on ICU data."""

import os

# Intel MKL, torch's CPU BLAS, promises the same bits run to run only in its "conditional
# numerical reproducibility" mode (Intel's oneMKL guide, "Reproducibility Conditions"); without
# it, a plain torch MLP trained with the same seed and thread count came out different in the
# 7th digit in 4 of about 335 fresh processes on this project's 2-core machine (and the CLI's
# same-seed test failed twice). The variation could not be triggered on demand, so that AUTO
# removes it is Intel's word, not a measurement. AUTO keeps the code branch MKL picks anyway:
# the numbers are the usual ones (checked on the smoke run). MKL reads the variable on its
# first call: set here, before anything imports torch. A value the user set wins;
# results.json records it (environment.mkl_cbwr).
os.environ.setdefault("MKL_CBWR", "AUTO")
