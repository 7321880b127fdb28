#!/bin/sh
# digitserve-model-job: make sure the model repository holds a complete (exported) version,
# training and exporting only what is missing. The compose `train` service and the Kubernetes
# Job run it; running it again is cheap and changes nothing.
#
#   digitserve-model-job            train + export if there is no version; export if the newest
#                                   version has no manifest yet; otherwise nothing
#   digitserve-model-job --retrain  train a new version and export it, whatever is there
#
# Every setting is a DIGITSERVE_* variable of `digitserve train` / `digitserve export`
# (DIGITSERVE_REPO, DIGITSERVE_NAME, DIGITSERVE_MODEL, DIGITSERVE_EPOCHS, DIGITSERVE_DATA, ...).
# MNIST: DIGITSERVE_DATA names a folder of IDX files (or mnist.npz); when it is empty or missing
# (nothing mounted there) the variable is dropped and Keras downloads MNIST instead.
set -eu

retrain=no
case "${1:-}" in
  "") ;;
  --retrain) retrain=yes ;;
  *) echo "usage: digitserve-model-job [--retrain]" >&2; exit 2 ;;
esac

if [ -n "${DIGITSERVE_DATA:-}" ] && [ -z "$(ls -A "$DIGITSERVE_DATA" 2>/dev/null)" ]; then
  echo "model-job: nothing in $DIGITSERVE_DATA: MNIST comes from the Keras download instead"
  unset DIGITSERVE_DATA
fi

# "none", "trained N" (no manifest yet) or "complete N", for the newest version.
state=$(python -c '
import os
from digitserve.repository import ModelRepository
repo = ModelRepository(os.environ.get("DIGITSERVE_REPO", "models"), os.environ.get("DIGITSERVE_NAME", "digits"))
versions = repo.versions()
if not versions:
    print("none")
else:
    print("complete" if versions[-1] in repo.complete_versions() else "trained", versions[-1])
')
echo "model-job: ${DIGITSERVE_REPO:-models}/${DIGITSERVE_NAME:-digits}: $state"

if [ "$retrain" = yes ] || [ "$state" = none ]; then
  digitserve train
  digitserve export
elif [ "${state%% *}" = trained ]; then
  digitserve export
else
  echo "model-job: the newest version is exported; nothing to do (--retrain trains a new one)"
fi
