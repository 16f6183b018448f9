"""The params sections of the parts that run as services: the registry, the scheduled
retraining deployment and the HTTP server (and the `Section` base every section shares)."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mnist_pipeline.core.schedule_checks import check_cron, check_timezone
from mnist_pipeline.core.validators import check_location, check_origin

# A window of N live images drawn like the reference's reaches a PSI of about 45/N by chance in
# some feature from N = 200 on (`python -m benchmarks.drift_chance`: peak 0.23 at N=200, 0.15 at
# 300, 0.08 at 500); below, the peak grows faster (0.78 at 150, 0.95 at 100: a decile that holds
# one image of 150, or none, adds 0.25 or 0.69 alone): a threshold needs DRIFT_CHANCE/N at
# least, and a window MIN_DRIFT_WINDOW images.
DRIFT_CHANCE_SEEN = 45.0
DRIFT_CHANCE = 50.0
MIN_DRIFT_WINDOW = 200
MAX_DRIFT_WINDOW = 100_000
# a Prefect block's "block-type/block-name" (schedule.notify_block, the flow's parameter)
BLOCK_SLUG = r"^[a-z0-9-]+/[a-z0-9-]+$"
# the sweep's trial deployment of the retraining flow (flows/serve.py, prefect.yaml)
TRIAL_DEPLOYMENT_NAME = "trial"


class Section(BaseModel):
    """Base for every section: immutable, unknown keys rejected, no type coercion of strings."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class PromotionParams(Section):
    """When a new version replaces production: paired evidence on the same images
    (McNemar's exact test; pipeline/promotion.py, docs/registry.md#promotion)."""

    significance: float = Field(default=0.05, gt=0, lt=1)  # p-value below which a change counts
    min_gain: float = Field(default=0.0, ge=0, le=1)  # accuracy gain a promotion needs at least
    per_digit_tolerance: float = Field(default=0.005, ge=0, le=1)  # largest MNIST digit drop
    # Promote on the extra holdout alone (no loss on MNIST test, better on the holdout): its
    # labels come from users, so a poisoned batch accepted by mistake could promote a model.
    promote_on_holdout: bool = False


class RegistryParams(Section):
    """Model registry location and promotion policy."""

    root: str = Field(default="registry", min_length=1)
    # Same rule as the registry (registry/keys.py): lowercase, no path separators.
    model_name: str = Field(default="mnist-cnn", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    promotion: PromotionParams = Field(default_factory=PromotionParams)
    # Optional Ed25519 signing (registry/signing.py); paths are relative to the project folder.
    signing_key: str | None = Field(default=None, min_length=1)  # PEM private key: sign cards
    trusted_keys: list[str] = Field(default_factory=list)  # PEM public keys: verify on every read

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        return check_location(value)

    @field_validator("signing_key", "trusted_keys")
    @classmethod
    def _key_paths(cls, value: str | list[str] | None) -> str | list[str] | None:
        for path in [value] if isinstance(value, str) else value or []:
            if "\0" in path:  # no file name holds one: os.open would raise ValueError
                raise ValueError(f"{path!r} holds a NUL character")
        return value

    require_signature: bool = False  # refuse unsigned versions (needs trusted_keys)
    # "required": a version the promotion rules would make production is registered as staging
    # and a retraining flow run waits (paused) up to approval_timeout_s for a person to approve
    # it (pipeline/approval.py, docs/prefect.md#approval).
    approval: Literal["none", "required"] = "none"
    approval_timeout_s: int = Field(default=86400, ge=1, le=30 * 86400)

    @model_validator(mode="after")
    def _trust_to_require(self) -> RegistryParams:
        if self.require_signature and not self.trusted_keys:
            raise ValueError("require_signature needs at least one of trusted_keys")
        return self


class ScheduleParams(Section):
    """The scheduled retraining deployment (see flows/serve.py) and its runs."""

    deployment_name: str = Field(default="weekly", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    cron: str = "0 3 * * 1"  # Mondays 03:00
    timezone: str = "UTC"
    # Runs of the deployment at once; a run over the limit waits (ENQUEUE) or is cancelled.
    concurrency_limit: int = Field(default=1, ge=1, le=100)
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"
    # Run folders (runs/<flow run>/) kept; older ones are deleted when a run starts.
    keep_runs: int = Field(default=10, ge=1)
    # A Prefect notification block ("block-type/block-name") told about every failed run;
    # Prefect names blocks with lowercase letters, digits and dashes only.
    notify_block: str | None = Field(default=None, pattern=BLOCK_SLUG)
    # `data add` with a Prefect server: this many new labelled digits start a retraining run.
    min_new_images: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _keep_every_running_run(self) -> ScheduleParams:
        if self.keep_runs < self.concurrency_limit:
            raise ValueError(
                f"keep_runs ({self.keep_runs}) must be >= concurrency_limit "
                f"({self.concurrency_limit}): pruning must not delete a running run's folder"
            )
        return self

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("deployment_name")
    @classmethod
    def _not_the_trials(cls, value: str) -> str:
        if value == TRIAL_DEPLOYMENT_NAME:
            raise ValueError(
                f"{value!r} is the name of the sweep's trial deployment of the same flow "
                "(flows/serve.py): one would replace the other"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)


# What registry/keys.py reads as a version (1, v1, 007) or takes as an alias name: not 0, not
# "v-1" (a bad version there), no "..".
_MODEL_REF = re.compile(
    r"v?0*[1-9][0-9]*|(?!v?[0-9]+$|v[+-][0-9]+$|.*\.\.)[a-z0-9][a-z0-9._-]{0,63}"
)


def _same_reference(a: str, b: str) -> bool:
    """Whether two model references name the same thing: one version (3, v3) or one alias."""
    versions = [re.fullmatch(r"v?([0-9]+)", ref) for ref in (a, b)]
    if all(versions):
        return int(versions[0][1]) == int(versions[1][1])  # type: ignore[index]
    return a == b


class ServeParams(Section):
    """`mnist-pipeline serve`: where it listens, what it serves, and its request limits."""

    host: str = Field(default="127.0.0.1", min_length=1)  # an address or a host name
    port: int = Field(default=8000, ge=1, le=65535)
    model: str = Field(default="production", min_length=1)  # an alias or a version number
    workers: int = Field(default=1, ge=1, le=64)
    # how often the alias is checked; under 0.1 s the follow thread would poll the store in a loop
    reload_interval_s: float = Field(default=1.0, ge=0.1, le=3600)
    # With PREFECT_API_URL set: also check at once on each `mnist.alias.moved` event.
    follow_events: bool = True
    max_upload_bytes: int = Field(default=4_000_000, ge=1)  # one request's body
    # one request's images, from their headers; at most data/decode.py's MAX_PIXELS, the limit
    # every image is held to (more turns its decompression-bomb check off)
    max_pixels: int = Field(default=4_000_000, ge=1, le=50_000_000)
    max_batch: int = Field(default=256, ge=1, le=10_000)  # images in one request
    top_k: int = Field(default=3, ge=1, le=10)  # probabilities returned per image by default
    # Web pages on these origins may call the API from a browser (CORS), e.g. examples/web.
    cors_origins: list[str] = Field(default_factory=list)
    # POST /feedback exists only with credentials: this file of `name sha256-of-token [expiry]`
    # lines (relative to the project folder) and/or the MNIST_FEEDBACK_TOKENS variable.
    feedback_tokens_file: str | None = Field(default=None, min_length=1)
    feedback_rate_per_minute: float = Field(default=10.0, gt=0, le=60_000)  # per credential
    feedback_quota: int = Field(default=100, ge=1)  # images awaiting review per credential
    metrics: bool = True  # GET /metrics: Prometheus metrics of every worker (serving/metrics.py)
    json_logs: bool = False  # one JSON object per request on stderr (serving/observe.py)
    # A challenger (an alias or a version, verified like `model`) run on the same images off
    # the response path (serving/challenger.py); null: none.
    shadow: str | None = Field(default=None, min_length=1)
    shadow_queue_images: int = Field(default=1024, ge=1, le=1_000_000)  # then skipped, counted
    # This share of /predict requests is answered by the shadow's version (a canary), until
    # its disagreement with production or its error on labelled images goes over a threshold.
    canary_percent: float = Field(default=0.0, ge=0, le=100)
    canary_max_disagreement: float = Field(default=0.1, ge=0, le=1)
    canary_min_images: int = Field(default=100, ge=1)  # compared before disagreement is judged
    canary_max_error: float = Field(default=0.1, ge=0, le=1)
    canary_min_labels: int = Field(default=20, ge=1)  # labelled before error is judged
    # Drift of live traffic from the served version's MNIST test reference (serving/drift.py):
    # watched whenever that version has a reference; false turns the monitor off.
    drift: bool = True
    drift_window: int = Field(default=500, ge=1, le=MAX_DRIFT_WINDOW)  # the last N images
    drift_threshold: float = Field(default=0.25, gt=0)  # PSI of any feature above this: drift
    drift_cooldown_s: float = Field(default=3600.0, ge=0)  # after a drift event, the next waits

    @field_validator("model", "shadow", mode="before")
    @classmethod
    def _version_number_as_written(cls, value: object) -> object:
        """`model: 2` in YAML is a number: the version it names, as `"2"` or `v2` would be;
        white space around a name is dropped, as the registry drops it."""
        if isinstance(value, str):
            return value.strip()
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("model", "shadow")
    @classmethod
    def _a_version_or_alias(cls, value: str | None) -> str | None:
        """What the registry could resolve: N, vN or an alias name; a typo such as 'a b' or
        'Production' names nothing that can ever exist, so the server would wait forever."""
        if value is not None and not _MODEL_REF.fullmatch(value):
            raise ValueError(
                f"{value!r} is neither a version (3, v3) nor an alias name (1-64 lowercase "
                "letters, digits, '.', '_' or '-', starting with a letter or digit)"
            )
        return value

    @field_validator("feedback_tokens_file")
    @classmethod
    def _tokens_path(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:  # no file name holds one
            raise ValueError(f"{value!r} holds a NUL character")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        """Each as a browser sends it in `Origin` (compared as text): a trailing slash or a
        path would never match, and the page would be refused with nothing said at startup."""
        for origin in value:
            if origin != "*" and not check_origin(origin):
                raise ValueError(
                    f"{origin!r} is not an origin as a browser sends it: scheme://host[:port] "
                    "in lowercase, with no path, not even a trailing '/' (e.g. "
                    "http://127.0.0.1:5500), or '*' for any"
                )
        return value

    @model_validator(mode="after")
    def _canary_needs_a_shadow(self) -> ServeParams:
        if self.canary_percent > 0 and self.shadow is None:
            raise ValueError("canary_percent > 0 needs serve.shadow (the canary's model)")
        return self

    @model_validator(mode="after")
    def _shadow_is_another_model(self) -> ServeParams:
        """A shadow naming what `model` names (`2`, `v2`; one alias) would compare the served
        version with itself, and a canary would answer with it: nothing learnt, nothing said."""
        if self.shadow is not None and _same_reference(self.shadow, self.model):
            raise ValueError(
                f"shadow {self.shadow!r} names the model served (model {self.model!r}): the "
                "shadow is a challenger, another alias or version (e.g. staging)"
            )
        return self

    @model_validator(mode="after")
    def _drift_above_chance(self) -> ServeParams:
        """Refuse a window and threshold that normal traffic crosses by chance (docs/params.md)."""
        if not self.drift:
            return self
        if self.drift_window < MIN_DRIFT_WINDOW:
            raise ValueError(
                f"drift_window {self.drift_window} is under {MIN_DRIFT_WINDOW} images, where "
                "normal traffic crosses any useful threshold by chance (a decile that holds one "
                f"image of the window, or none, adds 0.25-0.69 to PSI): use {MIN_DRIFT_WINDOW} "
                "or more"
            )
        least = DRIFT_CHANCE / self.drift_window
        if self.drift_threshold < least:
            window = max(MIN_DRIFT_WINDOW, math.ceil(DRIFT_CHANCE / self.drift_threshold))
            instead = (
                f"or the window at least {window} images"
                if window <= MAX_DRIFT_WINDOW
                else f"no window up to {MAX_DRIFT_WINDOW:,} images is large enough for it"
            )
            raise ValueError(
                f"drift_threshold {self.drift_threshold} is within chance for a drift_window "
                f"of {self.drift_window} images: normal traffic's PSI over N images reaches "
                f"about {DRIFT_CHANCE_SEEN:g}/N by chance, so the threshold must be at least "
                f"{DRIFT_CHANCE:g}/N = {least:.3g} ({instead})"
            )
        return self
