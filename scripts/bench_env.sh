# Sourced by the benchmark scripts (never by tests or CI): old OpenBLAS builds read
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, and a machine may set them; they slow the
# BLAS kernels of every side (our fc layers, Python's, the GEMM roofline), so no timed
# command sees them, and the script says so.
for variable in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
  if [ -n "${!variable+x}" ]; then
    echo "$(basename "$0"): unset $variable (was '${!variable}') for every timed command" >&2
  fi
  unset "$variable"
done
unset variable
