# syntax=docker/dockerfile:1
#
# Airlock production image: Apache Airflow 3.3.2 (Python 3.11) + the pinned
# runtime set from requirements.txt + the `airlock` package (include/airlock).
#
#   docker build -t airlock-airflow:3.3.2 .
#   # CPU-only torch instead of the default CUDA wheels (much smaller image):
#   docker build --build-arg EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu -t airlock-airflow:3.3.2-cpu .
#
# torch==2.13.0 from PyPI on linux/x86_64 is the CUDA build of that version
# (its nvidia-* runtime wheels come with it), so the same image serves the
# default worker and the GPU worker; the GPU worker only needs the NVIDIA
# Container Toolkit on the host. EXTRA_INDEX_URL adds another index (e.g. a
# PyTorch wheel index for a different CUDA/CPU variant of the same version, or
# an internal mirror); it is not used when empty.

ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ARG EXTRA_INDEX_URL=""

# Directories that named volumes mount over: created here so the volumes
# inherit airflow ownership (the admin passwords file, the per-run quarantine);
# /tmp/airlock is the build's scratch space, removed again below.
USER root
RUN mkdir -p /opt/airflow/auth /opt/airlock/quarantine /tmp/airlock/src \
 && chown -R airflow:0 /opt/airflow/auth /opt/airlock /tmp/airlock \
 && chmod 0700 /opt/airflow/auth /opt/airlock/quarantine
USER airflow

# 1. Pinned runtime set (the lock includes apache-airflow==3.3.2 itself, so the
#    image's Airflow is kept, not upgraded or downgraded).
COPY --chown=airflow:0 requirements.txt /tmp/airlock/requirements.txt
RUN pip install --no-cache-dir \
        ${EXTRA_INDEX_URL:+--extra-index-url "${EXTRA_INDEX_URL}"} \
        -r /tmp/airlock/requirements.txt

# 2. The airlock package (console script `airlock`), dependencies already there.
COPY --chown=airflow:0 pyproject.toml /tmp/airlock/src/
COPY --chown=airflow:0 include/ /tmp/airlock/src/include/
WORKDIR /tmp/airlock/src
RUN pip install --no-cache-dir --no-deps . \
 && rm -rf /tmp/airlock
WORKDIR /opt/airflow

# 3. DAGs, plugins and shipped data. docker-compose.yaml also bind-mounts these
#    (read-only) over the copies; PYTHONPATH puts include/ first so the mounted
#    library source is what runs.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/

ENV PYTHONPATH=/opt/airflow/include \
    AIRLOCK_ENV=production \
    AIRLOCK_QUARANTINE_ROOT=/opt/airlock/quarantine

# Fail the build, not the first task, if the stack does not import.
RUN python -c "import airflow, airlock, torch; print('airflow', airflow.__version__, '| torch', torch.__version__)" \
 && command -v airlock
