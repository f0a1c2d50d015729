"""Every external and exported name pd-observer relies on, in one place.

A rename upstream (vLLM, llm-d, OTel semconv) or of our own exported names is one edit here.
Other modules import these constants; they never spell the strings themselves.
Sources: ../shared/reference/field-notes.md (sections given per block).

The simulator may import this module (and only this one) from `observer`.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------------------------------------
# KV tiers (DESIGN §4). Order matters: fastest first; `unknown` is hits with no tier given.
# ---------------------------------------------------------------------------------------------
TIER_HBM: Final = "hbm"
TIER_DRAM: Final = "dram"
TIER_DISK: Final = "disk"
TIER_REMOTE: Final = "remote"
TIER_UNKNOWN: Final = "unknown"
TIERS: Final = (TIER_HBM, TIER_DRAM, TIER_DISK, TIER_REMOTE, TIER_UNKNOWN)
KNOWN_TIERS: Final = (TIER_HBM, TIER_DRAM, TIER_DISK, TIER_REMOTE)

ROLE_PREFILL: Final = "prefill"
ROLE_DECODE: Final = "decode"
ROLE_BOTH: Final = "prefill-decode"
ROLES: Final = (ROLE_PREFILL, ROLE_DECODE)

UNKNOWN_TENANT: Final = "unknown"
OTHER_TENANT: Final = "other"  # where tenants past the cardinality bound are folded
UNKNOWN_MODEL: Final = "unknown"
OTHER_MODEL: Final = "other"  # where models past the cardinality bound are folded
UNKNOWN_POD: Final = "unknown"

# Strings taken from spans (tenant, model, pod, request id) before they reach a record, the store
# or a label (docs/ingest.md "Untrusted strings"): NUL (PostgreSQL text cannot hold it) and lone
# surrogates (no UTF-8 form, for SQLite or the exposition) become VALUE_REPLACEMENT; a value
# longer than MAX_VALUE_CHARS is cut to MAX_VALUE_CHARS characters ending with
# VALUE_TRUNCATION_MARK and VALUE_HASH_CHARS hex digits of a hash of the whole value, so distinct
# long values stay distinct.
# 256 = the store's String(256) columns (PostgreSQL varchar counts characters) and covers every
# real value: Kubernetes pod names are at most 253 characters, model ids (`org/name`, LoRA
# adapter names) and tenant / request ids are far shorter.
MAX_VALUE_CHARS: Final = 256
VALUE_REPLACEMENT: Final = "\ufffd"
VALUE_TRUNCATION_MARK: Final = "~"
VALUE_HASH_CHARS: Final = 16  # BLAKE2b-64 of the value's UTF-8 bytes (surrogates passed through)
# The same rule applies to the strings metric sources read (docs/sources.md "Untrusted strings"):
# label values of Prometheus answers and scraped expositions, KV-event topics, discovered pod names.

# Client text quoted back in OTLP answers (docs/ingest.md "Untrusted strings"): a reject reason
# quotes at most REASON_VALUE_CHARS characters of a client value (a span name, an attribute
# value) as a Python repr, then MESSAGE_ELLIPSIS; a whole reason (with an exception's text) is cut
# to MAX_REASON_CHARS, and partial_success.error_message or an error status' message to
# MAX_ERROR_MESSAGE_CHARS, each ending with MESSAGE_ELLIPSIS when cut.
REASON_VALUE_CHARS: Final = 100
MAX_REASON_CHARS: Final = 300
MAX_ERROR_MESSAGE_CHARS: Final = 2048
MESSAGE_ELLIPSIS: Final = "\u2026"  # …

# A token count on a span (prompt, output, cached total or per tier) larger than this is rejected
# BAD_VALUE (docs/ingest.md): 400x the longest context of any model (10M tokens), and small enough
# that the store's BIGINT sums cannot overflow (a minute's rollup of one tenant and model would
# need 2**31 requests), where 2**53 per request overflowed them at 1,024 requests.
MAX_TOKENS: Final = 2**32

# ---------------------------------------------------------------------------------------------
# OpenTelemetry spans (field notes §3, DESIGN §4 span resolution defaults)
# ---------------------------------------------------------------------------------------------
SPAN_VLLM_REQUEST: Final = "llm_request"
SPAN_EPP_GATEWAY: Final = "gateway.request"
SPAN_SIDECAR_PREFILL: Final = "llm_d.pd_proxy.prefill"
SPAN_SIDECAR_DECODE: Final = "llm_d.pd_proxy.decode"
SPAN_EPP_SCHEDULER: Final = "run_scheduler_profile"
SPAN_EPP_SCORING: Final = "llm_d.epp.scoring"
SPAN_EPP_PICK: Final = "pick_endpoints"
SPAN_EPP_PREPARE_PD: Final = "prepare_disaggregation"

ATTR_REQUEST_ID: Final = "gen_ai.request.id"
ATTR_REQUEST_MODEL: Final = "gen_ai.request.model"
ATTR_RESPONSE_MODEL: Final = "gen_ai.response.model"
ATTR_MAX_TOKENS: Final = "gen_ai.request.max_tokens"

ATTR_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
ATTR_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"
ATTR_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
ATTR_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
ATTR_CACHED_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
ATTR_CACHE_CREATION_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
ATTR_TIER_HIT_PREFIX: Final = "llm_d.kv.hit_tokens."  # + hbm|dram|disk|remote
ATTR_TIER_HIT: Final = {t: ATTR_TIER_HIT_PREFIX + t for t in KNOWN_TIERS}

ATTR_LAT_QUEUE: Final = "gen_ai.latency.time_in_queue"
ATTR_LAT_TTFT: Final = "gen_ai.latency.time_to_first_token"
ATTR_LAT_E2E: Final = "gen_ai.latency.e2e"
ATTR_LAT_PREFILL: Final = "gen_ai.latency.time_in_model_prefill"
ATTR_LAT_DECODE: Final = "gen_ai.latency.time_in_model_decode"
ATTR_LAT_INFERENCE: Final = "gen_ai.latency.time_in_model_inference"

ATTR_TENANT_ID: Final = "tenant.id"
ATTR_FAIRNESS_ID: Final = "llm_d.fairness_id"
ATTR_ENDUSER_ID: Final = "enduser.id"
ATTR_USER_ID: Final = "user.id"
ATTR_ERROR_TYPE: Final = "error.type"

RES_POD_NAME: Final = "k8s.pod.name"
RES_SERVICE_INSTANCE: Final = "service.instance.id"
RES_SERVICE_NAME: Final = "service.name"
RES_LLMD_ROLE: Final = "llm_d.role"
RES_POD_LABEL_ROLE: Final = "k8s.pod.label.llm-d.ai/role"  # as the k8sattributes processor sets it
RES_NAMESPACE: Final = "k8s.namespace.name"

ATTR_EPP_PD_USED: Final = "llm_d.epp.pd.disaggregation_used"
ATTR_EPP_PD_PREFILL_ADDR: Final = "llm_d.epp.pd.prefill_pod_address"
ATTR_EPP_SCORER_WEIGHT: Final = "llm_d.epp.scorer.weight"
ATTR_SIDECAR_REQUEST_ID: Final = "request_id"
ATTR_SIDECAR_PREFILL_TARGET: Final = "prefill_target"
ATTR_SIDECAR_CONNECTOR: Final = "connector"
ATTR_SIDECAR_PREFILL_MS: Final = "prefill.duration_ms"
ATTR_SIDECAR_TRUE_TTFT_MS: Final = "true_ttft_ms"

# Default resolution orders (configurable in settings; these are the contract defaults).
DEFAULT_ENGINE_SPAN_NAMES: Final = (SPAN_VLLM_REQUEST,)
DEFAULT_ENGINE_MARKER_ATTR: Final = ATTR_LAT_E2E
DEFAULT_TENANT_KEYS: Final = (ATTR_TENANT_ID, ATTR_FAIRNESS_ID, ATTR_ENDUSER_ID, ATTR_USER_ID)
DEFAULT_MODEL_KEYS: Final = (ATTR_RESPONSE_MODEL, ATTR_REQUEST_MODEL)
DEFAULT_POD_KEYS: Final = (RES_POD_NAME, RES_SERVICE_INSTANCE)
DEFAULT_ROLE_KEYS: Final = (RES_LLMD_ROLE, RES_POD_LABEL_ROLE)
DEFAULT_INPUT_TOKEN_KEYS: Final = (ATTR_INPUT_TOKENS, ATTR_PROMPT_TOKENS)
DEFAULT_OUTPUT_TOKEN_KEYS: Final = (ATTR_OUTPUT_TOKENS, ATTR_COMPLETION_TOKENS)
SERVICE_SUFFIX_PREFILL: Final = "-prefill"
SERVICE_SUFFIX_DECODE: Final = "-decode"
SERVICE_VLLM_PREFILL: Final = "vllm-prefill"
SERVICE_VLLM_DECODE: Final = "vllm-decode"
SERVICE_ROUTING_PROXY: Final = "routing-proxy"
SERVICE_EPP: Final = "llm-d-epp"

# ---------------------------------------------------------------------------------------------
# vLLM Prometheus metrics (field notes §1). Generations: "v1" = vLLM >= 0.12 names,
# "legacy" = vLLM <= 0.11 names. Keyed by our logical name.
# ---------------------------------------------------------------------------------------------
VLLM_LABEL_MODEL: Final = "model_name"
VLLM_LABEL_ENGINE: Final = "engine"

VLLM_NUM_RUNNING: Final = "vllm:num_requests_running"
VLLM_NUM_WAITING: Final = "vllm:num_requests_waiting"
VLLM_KV_USAGE: Final = "vllm:kv_cache_usage_perc"
VLLM_KV_USAGE_LEGACY: Final = "vllm:gpu_cache_usage_perc"
VLLM_CPU_OFFLOAD_USAGE: Final = "vllm:kv_offload_cpu_cache_usage_perc"
VLLM_PREFIX_QUERIES: Final = "vllm:prefix_cache_queries"  # counter; exposed with _total
VLLM_PREFIX_HITS: Final = "vllm:prefix_cache_hits"
VLLM_PREFIX_QUERIES_LEGACY: Final = "vllm:gpu_prefix_cache_queries"
VLLM_PREFIX_HITS_LEGACY: Final = "vllm:gpu_prefix_cache_hits"
VLLM_EXT_PREFIX_QUERIES: Final = "vllm:external_prefix_cache_queries"
VLLM_EXT_PREFIX_HITS: Final = "vllm:external_prefix_cache_hits"
VLLM_PROMPT_TOKENS: Final = "vllm:prompt_tokens"
VLLM_GENERATION_TOKENS: Final = "vllm:generation_tokens"
VLLM_PROMPT_TOKENS_BY_SOURCE: Final = "vllm:prompt_tokens_by_source"
VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE: Final = "vllm:prompt_tokens_cached_by_source"
VLLM_PREEMPTIONS: Final = "vllm:num_preemptions"
VLLM_REQUEST_SUCCESS: Final = "vllm:request_success"
VLLM_TTFT: Final = "vllm:time_to_first_token_seconds"
VLLM_ITL: Final = "vllm:inter_token_latency_seconds"
VLLM_ITL_LEGACY: Final = "vllm:time_per_output_token_seconds"
VLLM_E2E: Final = "vllm:e2e_request_latency_seconds"
VLLM_QUEUE_TIME: Final = "vllm:request_queue_time_seconds"
VLLM_PREFILL_TIME: Final = "vllm:request_prefill_time_seconds"
VLLM_DECODE_TIME: Final = "vllm:request_decode_time_seconds"
VLLM_NIXL_XFER_TIME: Final = "vllm:nixl_xfer_time_seconds"
VLLM_NIXL_FAILED: Final = "vllm:nixl_num_failed_transfers"
# buckets of vllm:nixl_xfer_time_seconds (seconds per KV transfer, NIXL connector)
NIXL_XFER_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 5.0)
VLLM_KV_OFFLOAD_LOAD_BYTES: Final = "vllm:kv_offload_load_bytes"
VLLM_KV_OFFLOAD_STORE_BYTES: Final = "vllm:kv_offload_store_bytes"

# prompt_tokens_by_source{source=...}
VLLM_SOURCE_LOCAL_COMPUTE: Final = "local_compute"
VLLM_SOURCE_LOCAL_CACHE_HIT: Final = "local_cache_hit"
VLLM_SOURCE_EXTERNAL_KV: Final = "external_kv_transfer"
# prompt_tokens_cached_by_source{source=...} -> our tier
VLLM_CACHED_SOURCE_TO_TIER: Final = {
    "device": TIER_HBM,
    "host": TIER_DRAM,
    "disk": TIER_DISK,
    "p2p": TIER_REMOTE,
    "external_unspecified": TIER_REMOTE,
}
TTFT_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS: Final = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS: Final = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)

# LMCache (field notes §1)
LMCACHE_HIT_TOKENS: Final = "lmcache:num_hit_tokens"
LMCACHE_REQUESTED_TOKENS: Final = "lmcache:num_requested_tokens"
LMCACHE_LOCAL_CACHE_USAGE: Final = "lmcache:local_cache_usage"
LMCACHE_LOCAL_STORAGE_USAGE: Final = "lmcache:local_storage_usage"
LMCACHE_REMOTE_CACHE_USAGE: Final = "lmcache:remote_cache_usage"
LMCACHE_CPU_EVICT: Final = "lmcache:local_cpu_evict_count"

# ---------------------------------------------------------------------------------------------
# llm-d EPP metrics (field notes §2), by generation (newest first).
# ---------------------------------------------------------------------------------------------
EPP_GENERATIONS: Final = {
    "llm_d_epp": {
        "request_total": "llm_d_epp_request_total",
        "request_error_total": "llm_d_epp_request_error_total",
        "request_duration": "llm_d_epp_request_duration_seconds",
        "kv_cache_utilization": "llm_d_epp_average_kv_cache_utilization",
        "queue_size": "llm_d_epp_average_queue_size",
        "running_requests": "llm_d_epp_average_running_requests",
        "ready_endpoints": "llm_d_epp_ready_endpoints",
        "per_endpoint_queue_size": "llm_d_epp_per_endpoint_queue_size",
    },
    "inference_objective": {
        "request_total": "inference_objective_request_total",
        "request_error_total": "inference_objective_request_error_total",
        "request_duration": "inference_objective_request_duration_seconds",
        "kv_cache_utilization": "inference_pool_average_kv_cache_utilization",
        "queue_size": "inference_pool_average_queue_size",
        "running_requests": "inference_pool_average_running_requests",
        "ready_endpoints": "inference_pool_ready_pods",
        "per_endpoint_queue_size": "inference_pool_per_pod_queue_size",
    },
    "inference_model": {
        "request_total": "inference_model_request_total",
        "request_error_total": "inference_model_request_error_total",
        "request_duration": "inference_model_request_duration_seconds",
        "kv_cache_utilization": "inference_pool_average_kv_cache_utilization",
        "queue_size": "inference_pool_average_queue_size",
        "running_requests": "inference_pool_average_running_requests",
        "ready_endpoints": "inference_pool_ready_pods",
        "per_endpoint_queue_size": "inference_pool_per_pod_queue_size",
    },
}
EPP_LABEL_MODEL: Final = "model_name"
EPP_LABEL_TARGET_MODEL: Final = "target_model_name"
EPP_LABEL_FAIRNESS: Final = "fairness_id"
EPP_LABEL_POOL: Final = "name"
EPP_DISAGG_DECISION: Final = "llm_d_epp_disagg_decision_total"
EPP_POOL_SATURATION: Final = "llm_d_epp_flow_control_pool_saturation"
EPP_FAIRNESS_HEADER: Final = "x-gateway-inference-fairness-id"

# Kubernetes labels (field notes §5)
K8S_LABEL_ROLE: Final = "llm-d.ai/role"
K8S_LABEL_SERVING: Final = "llm-d.ai/inference-serving"
K8S_RESTART_ANNOTATION: Final = "kubectl.kubernetes.io/restartedAt"
K8S_FIELD_MANAGER: Final = "pd-observer"

# EPP scorers (field notes §5)
SCORER_PREFIX_CACHE: Final = "prefix-cache-scorer"
SCORER_QUEUE: Final = "queue-scorer"
SCORER_KV_UTILIZATION: Final = "kv-cache-utilization-scorer"
SCORER_LOAD_AWARE: Final = "load-aware-scorer"
SCORER_ACTIVE_REQUEST: Final = "active-request-scorer"
SCORER_SESSION_AFFINITY: Final = "session-affinity-scorer"
SCORER_NO_HIT_LRU: Final = "no-hit-lru-scorer"
# P/D decider (field notes §5): prefill runs on the decode pod when the uncached part of the
# prompt is below `nonCachedTokens`, on a prefill pod otherwise.
PD_DECIDER_PLUGIN: Final = "prefix-based-pd-decider"
PD_DECIDER_THRESHOLD_PARAM: Final = "nonCachedTokens"
# KServe LLMInferenceService inline scheduler config (field notes §5)
KSERVE_SCHEDULER_CONFIG_PATH: Final = ("spec", "router", "scheduler", "config")
KSERVE_SCHEDULER_CONFIG_REF_DEFAULT_KEY: Final = "epp"  # a config `ref` without `key`
# per-role workload conditions of an LLMInferenceService (`Ready` also covers the router): the
# single-node one and the multi-node (LeaderWorkerSet) one; those present must all be True
KSERVE_WORKLOAD_CONDITIONS: Final = {
    ROLE_PREFILL: ("PrefillWorkloadReady", "PrefillWorkerWorkloadReady"),
    ROLE_DECODE: ("MainWorkloadReady", "WorkerWorkloadReady"),
}
# where v1alpha2 reports each role's generated workload (kind, name): status.workloads.<key>
KSERVE_STATUS_WORKLOAD: Final = {ROLE_PREFILL: "prefill", ROLE_DECODE: "primary"}
# the workloads KServe generates, `<name>` + suffix (the fallback where the status does not name
# them; a name over K8S_NAME_MAX characters is cut and hashed as KServe does, knative's
# kmeta.ChildName): single-node Deployments and multi-node LeaderWorkerSets
K8S_NAME_MAX: Final = 63  # a DNS-1123 label
KSERVE_DEPLOYMENT_SUFFIX: Final = {ROLE_PREFILL: "-kserve-prefill", ROLE_DECODE: "-kserve"}
KSERVE_LWS_SUFFIX: Final = {ROLE_PREFILL: "-kserve-mn-prefill", ROLE_DECODE: "-kserve-mn"}
# a role's autoscaling section: with it KServe's autoscaler owns the role's replicas; the
# condition KServe sets only then (also when the section is inherited through spec.baseRefs)
KSERVE_SCALING_FIELD: Final = "scaling"
KSERVE_SCALING_CONDITION: Final = {ROLE_PREFILL: "PrefillScalingReady", ROLE_DECODE: "ScalingReady"}

# vLLM KV events (field notes §4)
KV_EVENT_BLOCK_STORED: Final = "BlockStored"
KV_EVENT_BLOCK_REMOVED: Final = "BlockRemoved"
KV_EVENT_ALL_CLEARED: Final = "AllBlocksCleared"
KV_MEDIUM_TO_TIER: Final = {"GPU": TIER_HBM, "CPU": TIER_DRAM, "STORAGE": TIER_DISK}
KV_TOPIC_PREFIX: Final = "kv@"
KV_TOPIC_SEPARATOR: Final = "@"  # topic = kv@<pod>@<model>
KV_MEDIUM_GPU: Final = "GPU"
KV_MEDIUM_CPU: Final = "CPU"
KV_MEDIUM_STORAGE: Final = "STORAGE"

# Reading metrics (sources issue): label names as Prometheus' Kubernetes SD relabelling sets them,
# the counter suffix of the text exposition, and the names of our sources and generations.
PROM_COUNTER_SUFFIX: Final = "_total"
PROM_LABEL_POD: Final = "pod"
PROM_LABEL_NAMESPACE: Final = "namespace"
VLLM_GENERATION_V1: Final = "v1"  # vLLM >= 0.12 names
VLLM_GENERATION_LEGACY: Final = "legacy"  # vLLM <= 0.11 names
SOURCE_PROMETHEUS: Final = "prometheus"
SOURCE_SCRAPE: Final = "scrape"
SOURCE_KV_EVENTS: Final = "kv_events"
# Kubernetes pod discovery: only a `source` label value of M_SOURCE_VALUES_REWRITTEN (not a metric source)
SOURCE_DISCOVERY: Final = "kubernetes_discovery"
K8S_LABEL_INSTANCE: Final = "app.kubernetes.io/instance"  # helm release: our default pool label

# Labels and values the twin's emitters put on vLLM/EPP metrics (field notes §1, §2, §4).
VLLM_LABEL_FINISHED_REASON: Final = "finished_reason"
VLLM_FINISHED_STOP: Final = "stop"
VLLM_FINISHED_ABORT: Final = "abort"
EPP_LABEL_ERROR_CODE: Final = "error_code"
EPP_LABEL_DECISION_TYPE: Final = "decision_type"
EPP_DECISION_PD: Final = "prefill-decode"
EPP_DECISION_DECODE_ONLY: Final = "decode-only"
EPP_LABEL_ENDPOINT: Final = "model_server_endpoint"
PROM_LABEL_METRICS_PATH: Final = "__metrics_path__"
KV_REPLAY_END_SEQ: Final = (-1).to_bytes(8, "big", signed=True)  # vLLM ZmqEventPublisher.END_SEQ

# ---------------------------------------------------------------------------------------------
# What pd-observer exports (DESIGN §4). Names without the `_total` suffix for counters:
# prometheus_client appends it.
# ---------------------------------------------------------------------------------------------
METRIC_PREFIX: Final = "pd_observer_"


def metric(name: str) -> str:
    """Our exported metric name: `pd_observer_<name>`."""
    return METRIC_PREFIX + name


LABEL_TENANT: Final = "tenant"
LABEL_MODEL: Final = "model"
LABEL_TIER: Final = "tier"
LABEL_SLO: Final = "slo"
LABEL_WINDOW: Final = "window"
LABEL_POOL: Final = "pool"
LABEL_ROLE: Final = "role"
LABEL_POD: Final = "pod"
LABEL_PHASE: Final = "phase"
LABEL_QUANTILE: Final = "quantile"
LABEL_REASON: Final = "reason"
LABEL_SOURCE: Final = "source"
LABEL_SCORER: Final = "scorer"
LABEL_STATUS: Final = "status"
LABEL_SIGNAL: Final = "signal"

# counters (exposed with _total)
M_REQUESTS: Final = metric("requests")  # {tenant, model}
M_PROMPT_TOKENS: Final = metric("prompt_tokens")  # {tenant, model}
M_OUTPUT_TOKENS: Final = metric("output_tokens")  # {tenant, model}
M_CACHED_TOKENS: Final = metric("cached_tokens")  # {tenant, model, tier}
M_REQUEST_ERRORS: Final = metric("request_errors")  # {tenant, model}
M_SLO_REQUESTS: Final = metric("slo_requests")  # {slo, tenant}
M_SLO_ERRORS: Final = metric("slo_errors")  # {slo, tenant}
M_SPANS_RECEIVED: Final = metric("ingest_spans")  # {status=accepted|rejected|ignored}
M_INGEST_BATCHES: Final = metric(
    "ingest_batches"
)  # {status=ok|partial|bad_request|too_large|throttled|unauthorized|unsupported}
M_TRACES_INCOMPLETE: Final = metric("traces_incomplete")  # P/D traces flushed without their partner
M_PENDING_ADOPTED: Final = metric("pending_adopted")  # P/D halves taken over from gone replicas
M_STORE_CLOCK_OFFSET: Final = metric("store_clock_offset_seconds")  # this replica's clock - the DB's
M_INGEST_VALUES_REWRITTEN: Final = metric("ingest_values_rewritten")  # span strings made safe (sanitize)
M_SOURCE_VALUES_REWRITTEN: Final = metric("source_values_rewritten")  # {source} source strings made safe
M_KV_EVENTS_DROPPED: Final = metric("kv_events_dropped")  # {reason} KV-event batches not applied
# reasons of M_KV_EVENTS_DROPPED
KV_DROP_MALFORMED: Final = "malformed"  # not the expected shape
KV_DROP_TOPIC_LIMIT: Final = "topic_limit"  # a topic beyond its publisher's max_topics_per_publisher
KV_DROP_POD_LIMIT: Final = "pod_limit"  # a new pod with the index's max_pods slots taken
KV_DROP_REASONS: Final = (KV_DROP_MALFORMED, KV_DROP_TOPIC_LIMIT, KV_DROP_POD_LIMIT)
M_TENANTS_FOLDED: Final = metric("tenants_folded")  # records folded into `other`
M_MODELS_FOLDED: Final = metric("models_folded")  # records whose model was folded into `other`
# gauges
M_INGEST_QUEUE_DEPTH: Final = metric("ingest_queue_depth")
M_INGEST_QUEUED_SPANS: Final = metric("ingest_queued_spans")
M_PENDING_TRACES: Final = metric("pending_traces")
M_TRACKED_TENANTS: Final = metric("tracked_tenants")
M_TRACKED_MODELS: Final = metric("tracked_models")
M_PREFIX_HIT_RATE: Final = metric("prefix_hit_rate")  # {tenant, model, window}
M_TIER_SHARE: Final = metric("cached_tier_share")  # {tenant, tier, window}
M_LATENCY_QUANTILE: Final = metric("latency_seconds")  # {tenant, phase, quantile, window}
M_SLO_ATTAINMENT: Final = metric("slo_attainment")  # {slo, tenant, window}
M_SLO_BURN_RATE: Final = metric("slo_burn_rate")  # {slo, tenant, window}
M_SLO_OBJECTIVE: Final = metric("slo_objective")  # {slo}
# fleet signals (signals issue)
M_CASCADE: Final = metric("cache_cascade")  # {tenant} 1 when firing
M_HBM_SHARE_DROP: Final = metric("hbm_share_drop")  # {tenant}
M_TTFT_RATIO: Final = metric("ttft_p90_baseline_ratio")  # {tenant}
M_DECODE_STARVATION: Final = metric("decode_starvation")  # {pool}
M_PRE_DECODE_SHARE: Final = metric("pre_decode_ttft_share")  # {pool}
M_DECODE_BUSY_RATIO: Final = metric("decode_busy_ratio")  # {pool}
M_DECODE_PRESSURE: Final = metric("decode_pressure")  # {pool}
M_PD_RATIO_NEEDED: Final = metric("pd_ratio_needed")  # {pool}
M_PD_RATIO_DEPLOYED: Final = metric("pd_ratio_deployed")  # {pool}
M_POD_TIER_USAGE: Final = metric("pod_tier_usage")  # {pool, pod, role, tier}
M_POD_EVICTION_RATE: Final = metric("pod_eviction_rate")  # {pool, pod, tier}
M_POD_DEMOTION_RATE: Final = metric("pod_demotion_rate")  # {pool, pod, tier}
M_POD_QUEUE: Final = metric("pod_queue_depth")  # {pool, pod, role}
M_SOURCE_UP: Final = metric("source_up")  # {source}
M_SOURCE_AGE: Final = metric("source_data_age_seconds")  # {source}
# autoscaler (control-loop issue)
M_DESIRED_REPLICAS: Final = metric("autoscaler_desired_replicas")  # {pool, role}
M_CURRENT_REPLICAS: Final = metric("autoscaler_current_replicas")  # {pool, role}
M_DECISIONS: Final = metric("autoscaler_decisions")  # counter {pool, reason}
M_SCORER_WEIGHT: Final = metric("autoscaler_scorer_weight")  # {pool, scorer}
M_DECIDER_THRESHOLD: Final = metric("autoscaler_pd_decider_threshold_tokens")  # {pool}
M_ACTUATION_ERRORS: Final = metric("autoscaler_actuation_errors")  # counter {pool}
M_AUTOSCALER_LAST_ACTION: Final = metric("autoscaler_last_action_timestamp_seconds")  # {pool}
M_AUTOSCALER_LEADER: Final = metric("autoscaler_leader")  # 1: this instance holds the lease and acts

# Window labels used on gauges; seconds -> label.
WINDOW_LABELS: Final = {60: "1m", 300: "5m", 3600: "1h"}

# Phases of a request (DESIGN §4, P/D stitching)
PHASE_QUEUE: Final = "queue"
PHASE_PREFILL: Final = "prefill"
PHASE_KV_TRANSFER: Final = "kv_transfer"
PHASE_DECODE: Final = "decode"
PHASES: Final = (PHASE_QUEUE, PHASE_PREFILL, PHASE_KV_TRANSFER, PHASE_DECODE)
SLI_TTFT: Final = "ttft"
SLI_ITL: Final = "itl"
SLI_E2E: Final = "e2e"
SLI_ERROR: Final = "error"
LATENCY_SLIS: Final = (SLI_TTFT, SLI_ITL, SLI_E2E)
SLIS: Final = (*LATENCY_SLIS, SLI_ERROR)

# OTLP/HTTP (field notes §8)
OTLP_TRACES_PATH: Final = "/v1/traces"
CT_PROTOBUF: Final = "application/x-protobuf"
CT_JSON: Final = "application/json"
CE_GZIP: Final = "gzip"  # Content-Encoding values accepted on ingest
CE_IDENTITY: Final = "identity"
# objects + arrays in one OTLP/JSON body (413 past it): json.loads materialises them all, so
# this bounds its memory (a million dense objects: 72-191 MiB); a real span has 22, so ~44,000
# spans fit, more than max_decompressed_bytes allows (benchmarks/ingest/json_cost.py)
MAX_JSON_CONTAINERS: Final = 1_000_000
# request bodies of the query API (PUT /api/v1/slos); 413 past it
MAX_API_BODY_BYTES: Final = 1024 * 1024
# SLOs in one set (`slos:` or PUT /api/v1/slos; 422 past it): each adds 2 counters and 2 gauges per
# window for every tenant to /metrics and is judged on every request (docs/configuration.md)
MAX_SLOS: Final = 100
OTLP_STATUS_ERROR: Final = 2  # OTLP Status.code ERROR
ATTR_REQUEST_N: Final = "gen_ai.request.n"

ENV_PREFIX: Final = "PD_OBSERVER_"

# ---------------------------------------------------------------------------------------------
# Alerts (alerts issue): recording-rule and alert names, alert labels and annotations.
# Counters are exposed by prometheus_client with COUNTER_SUFFIX appended.
# ---------------------------------------------------------------------------------------------
COUNTER_SUFFIX: Final = "_total"
RULE_PREFIX: Final = "pd_observer:"
RECORD_SLO_ERROR_RATIO: Final = RULE_PREFIX + "slo_error_ratio:rate"  # + window, e.g. ...:rate5m


def slo_error_ratio_record(window: str) -> str:
    """Recording rule holding errors/requests per {slo, tenant} over `window` (e.g. "5m")."""
    return RECORD_SLO_ERROR_RATIO + window


ALERT_SLO_BURN: Final = "PdObserverErrorBudgetBurn"
ALERT_CACHE_CASCADE: Final = "PdObserverCachePartitionCascade"
ALERT_DECODE_STARVATION: Final = "PdObserverDecodeStarvation"
ALERT_DECODE_PRESSURE: Final = "PdObserverDecodePressure"
ALERT_KV_SATURATION: Final = "PdObserverKvCacheSaturation"
ALERT_PREFILL_QUEUE: Final = "PdObserverPrefillQueueBuildup"
ALERT_PD_IMBALANCE: Final = "PdObserverPdImbalance"
ALERT_OBSERVER_BLIND: Final = "PdObserverBlind"
ALERT_AUTOSCALER_STUCK: Final = "PdObserverAutoscalerStuck"
ALERT_AUTOSCALER_THRASHING: Final = "PdObserverAutoscalerThrashing"
ALERT_AUTOSCALER_ACTUATION: Final = "PdObserverAutoscalerActuationFailing"
ALERT_AUTOSCALER_LEADERLESS: Final = "PdObserverAutoscalerLeaderless"
LABEL_SEVERITY: Final = "severity"
SEVERITY_PAGE: Final = "page"
SEVERITY_TICKET: Final = "ticket"
SEVERITIES: Final = (SEVERITY_PAGE, SEVERITY_TICKET)
LABEL_LONG_WINDOW: Final = "long_window"
LABEL_SHORT_WINDOW: Final = "short_window"
LABEL_ALERTNAME: Final = "alertname"
BLIND_REASON_DOWN: Final = "source_down"
BLIND_REASON_STALE: Final = "stale"
BLIND_REASON_ABSENT: Final = "absent"
ANNOTATION_SUMMARY: Final = "summary"
ANNOTATION_DESCRIPTION: Final = "description"
ANNOTATION_RUNBOOK: Final = "runbook_url"

# Latency metrics the aggregator keeps a quantile sketch for (per tenant, per window).
LATENCY_METRICS: Final = (SLI_TTFT, SLI_ITL, SLI_E2E, *PHASES)

# Tenant entry of GET /api/v1/tenants (DESIGN §4). Keys after API_SLO are allowed additions.
API_TENANT: Final = "tenant"
API_REQUESTS: Final = "requests"
API_PROMPT_TOKENS: Final = "prompt_tokens"
API_CACHED_TOKENS: Final = "cached_tokens"
API_PREFIX_HIT_RATE: Final = "prefix_hit_rate"
API_CACHED_BY_TIER: Final = "cached_tokens_by_tier"
API_TTFT: Final = "ttft_seconds"
API_ITL: Final = "itl_seconds"
API_E2E: Final = "e2e_seconds"
API_SLO: Final = "slo"
API_ATTAINMENT: Final = "attainment"
API_BURN_RATE: Final = "burn_rate"
API_P50: Final = "p50"
API_P90: Final = "p90"
API_P99: Final = "p99"
API_OUTPUT_TOKENS: Final = "output_tokens"
API_ERRORS: Final = "errors"
API_PHASES: Final = "phases_seconds"
API_TIER_SHARES: Final = "tier_shares"
API_SIGNALS: Final = "signals"  # fleet signals of a tenant entry (cascade status + evidence)

# ---------------------------------------------------------------------------------------------
# Dashboards (dashboards issue): Grafana dashboard uids (`GET /api/v1/dashboards/{uid}`), the
# label the Grafana sidecar selects ConfigMaps by, and its folder annotation.
# ---------------------------------------------------------------------------------------------
DASHBOARD_UID_FLEET: Final = "pd-observer-fleet-slo"
DASHBOARD_UID_TENANTS: Final = "pd-observer-tenants"
DASHBOARD_UID_KV_TIERS: Final = "pd-observer-kv-tiers"
DASHBOARD_UID_PD_BALANCE: Final = "pd-observer-pd-balance"
DASHBOARD_UID_AUTOSCALER: Final = "pd-observer-autoscaler"
DASHBOARD_UIDS: Final = (
    DASHBOARD_UID_FLEET,
    DASHBOARD_UID_TENANTS,
    DASHBOARD_UID_KV_TIERS,
    DASHBOARD_UID_PD_BALANCE,
    DASHBOARD_UID_AUTOSCALER,
)
GRAFANA_DASHBOARD_LABEL: Final = "grafana_dashboard"  # kiwigrid k8s-sidecar default label
GRAFANA_DASHBOARD_LABEL_VALUE: Final = "1"
GRAFANA_FOLDER_ANNOTATION: Final = "grafana_folder"  # grafana helm chart sidecar folderAnnotation

# Prometheus job names in the configs generated by `pd-observer demo` (observer.wiring).
DEMO_JOB_SERVICE: Final = "pd-observer"
DEMO_JOB_TWIN: Final = "llm-d-twin"
