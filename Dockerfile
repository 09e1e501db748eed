# The dcstore image the Kubernetes example Job runs (k8s/): dcstore with every backend,
# image decoding, tokenizers (pack --text with a tokenizer.json),
# the Redis and Memcached tiers and torch, as a non-root user. Build from the repository root:
#   docker build -t dcstore:0.1.0 .
FROM python:3.11.11-slim-bookworm
RUN useradd --create-home --uid 1000 --user-group dcstore
COPY pyproject.toml README.md LICENSE* /src/
COPY dcstore /src/dcstore
RUN pip install --no-cache-dir "/src[torch,redis,memcached,hdfs,cassandra,mongodb,images,text]" \
    && python -m compileall -q /usr/local/lib/python3.11/site-packages/dcstore
USER 1000:1000
WORKDIR /home/dcstore
ENTRYPOINT []
CMD ["dcstore", "--help"]
