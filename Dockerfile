# The project's Airflow image: the official Apache Airflow 3.3.2 image, plus our locked runtime
# dependencies, the provider package (TikTokDisplayHook, the operators, the "tiktok" connection
# type) with the pipeline, warehouse and ops packages, and the DAGs. No tools (demo, bench, ...).
# The TikTok simulator only when asked: --build-arg WITH_SIMULATOR=1 (the compose `simulator`
# profile builds its own image that way).
#
#   docker compose build            (docker-compose.yaml builds it as ${AIRFLOW_IMAGE_NAME})
#   docker build -t airflow-tiktok-display:latest .
#   docker build --build-arg WITH_SIMULATOR=1 -t airflow-tiktok-display-sim:latest .
#
# Python 3.11: requirements.lock is resolved for it (`make lock`).
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

# Runtime requirements as pinned in requirements.txt, and everything they pull in held to the
# versions of requirements.lock (which also pins the test tools; -c installs none of those).
# The official image installs into the airflow user's site, as its docs recommend.
COPY --chown=airflow:0 requirements.txt requirements.lock /opt/airflow/requirements/
RUN pip install --no-cache-dir \
      -r /opt/airflow/requirements/requirements.txt \
      -c /opt/airflow/requirements/requirements.lock

# The provider and its sibling packages, from pyproject.toml: registered with Airflow through the
# apache_airflow_provider entry point, so the connection form offers "TikTok Display API".
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/src/
COPY --chown=airflow:0 plugins /opt/airflow/src/plugins
COPY --chown=airflow:0 include /opt/airflow/src/include
RUN pip install --no-cache-dir --no-deps /opt/airflow/src \
    && python -c "import tiktok_provider, tiktok_pipeline, tiktok_warehouse, tiktok_ops"

# The simulator (its own distribution, simulator/pyproject.toml; its dependencies are runtime
# requirements already), only for an image built with WITH_SIMULATOR=1.
ARG WITH_SIMULATOR=0
COPY --chown=airflow:0 simulator /opt/airflow/src/simulator
RUN if [ "$WITH_SIMULATOR" = "1" ]; then \
      pip install --no-cache-dir --no-deps /opt/airflow/src/simulator && python -c "import tiktok_sim"; \
    fi

COPY --chown=airflow:0 dags /opt/airflow/dags
# The TikTok accounts page is an Airflow plugin: the api-server loads it from the plugins folder.
RUN mkdir -p /opt/airflow/plugins \
    && cp -r /opt/airflow/src/plugins/tiktok_accounts /opt/airflow/plugins/tiktok_accounts

# The simple auth manager's passwords file lives here, on a volume shared by airflow-init (which
# writes it) and airflow-apiserver; the directory must exist in the image so the volume is
# created owned by airflow.
RUN mkdir -p /opt/airflow/auth && chmod 0770 /opt/airflow/auth

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
