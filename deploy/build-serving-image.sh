#!/usr/bin/env bash
# Builds the serving image (deploy/Dockerfile.serve) without pulling any image: `make image` runs it.
#   deploy/build-serving-image.sh [IMAGE]          (default restaurant-pipeline-serve:latest)
# 1. The base: Debian bookworm's python3 and the few libraries the wheels need, made with mmdebstrap and
#    `docker import`ed as restaurant-pipeline-serve-base:<hash of the mmdebstrap arguments>; made only when
#    no image has that tag (remove it to take Debian's newer packages: docker rmi restaurant-pipeline-serve-base:...).
# 2. The wheelhouse, on this host: the wheels of deploy/serving.lock for the base's Python (3.11, glibc 2.36),
#    hash-checked, and the project's own wheel.
# 3. docker build FROM the base with the wheelhouse as its context; the image installs from it with --no-index.
# Needs root (mmdebstrap, the Docker daemon), mmdebstrap and docker (Debian: apt-get install mmdebstrap docker.io).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${1:-restaurant-pipeline-serve:latest}
PYTHON=${PYTHON:-python3}
DOCKER=${DOCKER:-docker}
CONTEXT=build/serving-image   # the docker build context: the wheelhouse and the lock
SOURCE=build/serving-source   # what the project's wheel is built from

# python3-venv: the image's virtual environment (and the pip that fills it); libstdc++6: onnxruntime's and
# pyarrow's C++ runtime; ca-certificates: rediss:// verified against the system's authorities. The merged-usr
# hook sets up merged /usr as debootstrap does, without the usrmerge package (and the perl it pulls in).
BASE_ARGS=(
  --variant=essential
  --include=python3,python3-venv,libstdc++6,ca-certificates
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt=path-exclude=/usr/share/man/*
  --dpkgopt=path-exclude=/usr/share/doc/*
  --dpkgopt=path-include=/usr/share/doc/*/copyright
  --dpkgopt=path-exclude=/usr/share/locale/*
  --dpkgopt=path-exclude=/usr/share/info/*
  bookworm
)
MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
BASE="restaurant-pipeline-serve-base:$(printf '%s\n' "${BASE_ARGS[@]}" "${MIRRORS[@]}" | sha256sum | cut -c1-12)"

mkdir -p "$CONTEXT"
exec 9>build/serving-image.lock
flock 9   # one build at a time in this checkout

if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  echo "building the base image $BASE (mmdebstrap)"
  rm -f "$CONTEXT/base.tar"
  mmdebstrap --quiet "${BASE_ARGS[@]}" "$CONTEXT/base.tar" "${MIRRORS[@]}" >build/serving-base.log 2>&1 \
    || { cat build/serving-base.log; exit 1; }
  "$DOCKER" import "$CONTEXT/base.tar" "$BASE" >/dev/null
  rm -f "$CONTEXT/base.tar"
fi

# The wheels for the base's interpreter whatever this host's is: CPython 3.11 on glibc 2.36, which runs every
# manylinux wheel up to manylinux_2_36 (pip takes each platform tag it may choose from explicitly). Binary wheels
# only: nothing is compiled here.
PLATFORMS=(--platform manylinux2014_x86_64)
for glibc_minor in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${glibc_minor}_x86_64"); done
rm -rf "$CONTEXT/wheels" "$CONTEXT/project" "$SOURCE"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes --only-binary :all: \
  --python-version 3.11 --implementation cp --abi cp311 "${PLATFORMS[@]}" \
  -r deploy/serving.lock -d "$CONTEXT/wheels"
# The project's wheel from a copy of its sources, so nothing left from an earlier build (setuptools' build/lib)
# goes in; a fixed timestamp makes the same sources the same wheel, and Docker reuses its layers.
mkdir -p "$SOURCE"
cp -r pyproject.toml setup.py README.md pipeline "$SOURCE/"
find "$SOURCE" -name __pycache__ -prune -exec rm -rf {} +
SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps \
  -w "$CONTEXT/project" "$SOURCE"
cp deploy/serving.lock "$CONTEXT/serving.lock"

"$DOCKER" build --build-arg "BASE=$BASE" -f deploy/Dockerfile.serve -t "$IMAGE" "$CONTEXT" >build/serving-image.log 2>&1 \
  || { cat build/serving-image.log; exit 1; }
echo "$IMAGE: $("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
