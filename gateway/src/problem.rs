//! The fixed problem-type catalogue of the federation contract (SPEC §4).
//!
//! Every error that crosses a boundary — HTTP response, CLI output, conformance
//! assertion — is one of these. The catalogue is data: slug, HTTP status and
//! title live in one table so the API, the CLI and the docs cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;

/// Prefix of every problem `type` URI.
pub const PROBLEM_URI_PREFIX: &str = "urn:bashu:problem:";

/// Media type of every error body (RFC 9457).
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One entry per problem type of SPEC §4. Adding a type means adding a row to
/// [`CATALOGUE`] as well; the `catalogue_is_complete` test enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemType {
    Unauthenticated,
    ForbiddenRole,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedAlgorithm,
    InvalidSignature,
    UnknownKey,
    RevokedKey,
    IssuerMismatch,
    CredentialExpired,
    CredentialNotYetValid,
    SchemaViolation,
    UnmappableRecord,
    MappingVersionUnknown,
    ChainBroken,
    UnknownDestination,
    DuplicateConflict,
    RateLimited,
    Unavailable,
    /// Not in the SPEC §4 list: used for routes that do not exist, so that
    /// even a 404 is problem+json. Integrators should treat it like any
    /// other 4xx.
    NotFound,
}

/// Catalogue row: the wire slug, HTTP status and human title of a type, in
/// English and in Simplified Chinese (registrars read Chinese).
#[derive(Debug, Clone, Copy)]
pub struct ProblemInfo {
    pub kind: ProblemType,
    pub slug: &'static str,
    pub status: u16,
    pub title: &'static str,
    pub title_zh: &'static str,
}

/// The whole catalogue, in SPEC order.
pub const CATALOGUE: &[ProblemInfo] = &[
    row(
        ProblemType::Unauthenticated,
        "unauthenticated",
        401,
        "Client certificate missing or not trusted",
        "客户端证书缺失或不受信任",
    ),
    row(
        ProblemType::ForbiddenRole,
        "forbidden-role",
        403,
        "Client identity may not use this endpoint",
        "客户端身份无权使用此接口",
    ),
    row(
        ProblemType::MalformedRequest,
        "malformed-request",
        400,
        "Request is not well-formed",
        "请求格式不正确",
    ),
    row(
        ProblemType::PayloadTooLarge,
        "payload-too-large",
        413,
        "Request body exceeds the limit",
        "请求体超出大小限制",
    ),
    row(
        ProblemType::UnsupportedAlgorithm,
        "unsupported-algorithm",
        422,
        "JWS algorithm or header not allowed",
        "不允许的 JWS 算法或头部参数",
    ),
    row(
        ProblemType::InvalidSignature,
        "invalid-signature",
        422,
        "Signature does not verify",
        "签名验证失败",
    ),
    row(
        ProblemType::UnknownKey,
        "unknown-key",
        422,
        "Signing key is not in the issuer's trust key set",
        "签名密钥不在签发方的信任密钥集中",
    ),
    row(
        ProblemType::RevokedKey,
        "revoked-key",
        422,
        "Signing key has been revoked or retired",
        "签名密钥已被吊销或停用",
    ),
    row(
        ProblemType::IssuerMismatch,
        "issuer-mismatch",
        422,
        "Issuer does not match the signing key's member or role",
        "签发方与签名密钥所属成员或角色不符",
    ),
    row(
        ProblemType::CredentialExpired,
        "credential-expired",
        422,
        "Credential is past its validUntil",
        "凭证已过有效期（validUntil）",
    ),
    row(
        ProblemType::CredentialNotYetValid,
        "credential-not-yet-valid",
        422,
        "Credential is before its validFrom",
        "凭证尚未生效（validFrom）",
    ),
    row(
        ProblemType::SchemaViolation,
        "schema-violation",
        422,
        "Credential or record violates the profile",
        "凭证或学习记录不符合规范",
    ),
    row(
        ProblemType::UnmappableRecord,
        "unmappable-record",
        422,
        "Record cannot be mapped to the target framework",
        "学习记录无法映射到目标资历框架",
    ),
    row(
        ProblemType::MappingVersionUnknown,
        "mapping-version-unknown",
        422,
        "Framework or mapping table version is not known",
        "资历框架或映射表版本未知",
    ),
    row(
        ProblemType::ChainBroken,
        "chain-broken",
        422,
        "Credential chain does not verify link by link",
        "凭证链未能逐环通过验证",
    ),
    row(
        ProblemType::UnknownDestination,
        "unknown-destination",
        422,
        "Destination member is not configured",
        "目标成员未配置",
    ),
    row(
        ProblemType::DuplicateConflict,
        "duplicate-conflict",
        409,
        "Same credential id submitted with different bytes",
        "同一凭证 id 以不同内容重复提交",
    ),
    row(
        ProblemType::RateLimited,
        "rate-limited",
        429,
        "Too many requests",
        "请求过于频繁",
    ),
    row(
        ProblemType::Unavailable,
        "unavailable",
        503,
        "Service temporarily unavailable",
        "服务暂时不可用",
    ),
    row(
        ProblemType::NotFound,
        "not-found",
        404,
        "No such resource",
        "资源不存在",
    ),
];

const fn row(
    kind: ProblemType,
    slug: &'static str,
    status: u16,
    title: &'static str,
    title_zh: &'static str,
) -> ProblemInfo {
    ProblemInfo {
        kind,
        slug,
        status,
        title,
        title_zh,
    }
}

impl ProblemType {
    /// Catalogue row of this type.
    pub fn info(self) -> &'static ProblemInfo {
        // The catalogue is indexed by declaration order; the test below keeps
        // the two in step, so a miss is impossible in a built binary.
        &CATALOGUE[self as usize]
    }

    pub fn slug(self) -> &'static str {
        self.info().slug
    }

    pub fn status(self) -> u16 {
        self.info().status
    }

    /// The type of a mapper error. Every mapper error names its SPEC §4
    /// slug and the catalogue has them all (a test holds that); the
    /// fallback only keeps a future mapper error from becoming a 500.
    pub fn of_mapping(e: &schema_mapper::MapError) -> Self {
        ProblemType::from_slug(e.slug()).unwrap_or(ProblemType::UnmappableRecord)
    }

    /// A sender tries the same envelope again after this answer (SPEC §4):
    /// the receiver may accept it later, so nothing queued behind it may
    /// overtake it.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ProblemType::Unavailable | ProblemType::MappingVersionUnknown | ProblemType::RateLimited
        ) || self.status() >= 500
    }

    pub fn title(self) -> &'static str {
        self.info().title
    }

    /// Title in `lang`.
    pub fn title_in(self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.info().title,
            Lang::Zh => self.info().title_zh,
        }
    }

    /// Full `type` URI, e.g. `urn:bashu:problem:invalid-signature`.
    pub fn uri(self) -> String {
        format!("{PROBLEM_URI_PREFIX}{}", self.slug())
    }

    /// Parses a slug or a full `urn:bashu:problem:` URI.
    pub fn from_slug(s: &str) -> Option<Self> {
        let slug = s.strip_prefix(PROBLEM_URI_PREFIX).unwrap_or(s);
        CATALOGUE.iter().find(|p| p.slug == slug).map(|p| p.kind)
    }
}

impl fmt::Display for ProblemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// Language of the human-readable members (`title`, `detail`) of a problem.
/// `type`, `status` and `exchangeId` never change with the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English: the default, and the language of every free-text detail.
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// The `Content-Language` tag of a response in this language.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// One language tag or locale name (`zh`, `zh-CN`, `zh_CN.UTF-8`, `en`,
    /// `EN-us`): any tag whose primary subtag is `zh` is Chinese, `en` is
    /// English, anything else is not ours (`None`).
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_', '.', '@']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("zh") {
            Some(Lang::Zh)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// Picks a language from an `Accept-Language` value (RFC 9110 §12.5.4),
    /// parsed simply: the supported tag with the highest q-value wins, the
    /// earlier one on a tie; `q=0` excludes a tag; a malformed q counts as
    /// 1; `*` and unsupported tags do not select anything. Default English.
    pub fn from_accept_language(header: &str) -> Self {
        let mut best: Option<(u16, Lang)> = None;
        for item in header.split(',').take(MAX_ACCEPT_LANGUAGE_ITEMS) {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(Lang::from_tag) else {
                continue;
            };
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .next()
                .map_or(1000, parse_qvalue);
            if q > 0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }

    /// The CLI's language: `--lang` if given, else the first set of
    /// `LC_ALL`, `LC_MESSAGES`, `LANG` (POSIX order), else English.
    pub fn from_cli(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Self {
        if let Some(tag) = flag {
            return Lang::from_tag(tag).unwrap_or_default();
        }
        ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|name| env(name).filter(|v| !v.is_empty()))
            .next()
            .and_then(|v| Lang::from_tag(&v))
            .unwrap_or_default()
    }
}

/// Most `Accept-Language` items looked at (the header is client input).
const MAX_ACCEPT_LANGUAGE_ITEMS: usize = 32;

/// A q-value in thousandths (`0.8` → 800), clamped to 0..=1000; an
/// unparsable value counts as 1.
fn parse_qvalue(s: &str) -> u16 {
    match s.trim().parse::<f32>() {
        Ok(q) if q.is_finite() => (q.clamp(0.0, 1.0) * 1000.0).round() as u16,
        _ => 1000,
    }
}

/// Chinese for the few fixed detail texts the gateway uses verbatim. Every
/// other detail is free text (it names fields, members, limits) and stays
/// English in every language.
pub const DETAIL_ZH: &[(&str, &str)] = &[
    ("no such route", "没有这个路由"),
    ("no such exchange", "没有这个交换"),
    ("gateway is not ready", "网关尚未就绪"),
    ("store temporarily unavailable", "存储暂时不可用"),
    ("key set temporarily unavailable", "密钥集暂时不可用"),
    ("gateway signing key unavailable", "网关签名密钥不可用"),
    ("request body could not be read", "无法读取请求体"),
    ("invalid Content-Length", "Content-Length 无效"),
    (
        "Content-Type must be application/json",
        "Content-Type 必须是 application/json",
    ),
    ("this route takes no query parameters", "此路由不接受查询参数"),
    (
        "limit must be an integer from 1 to 500",
        "limit 必须是 1 到 500 之间的整数",
    ),
    (
        "after must be a cursor (unsigned integer)",
        "after 必须是游标（无符号整数）",
    ),
    (
        "since must be an RFC 3339 date-time",
        "since 必须是 RFC 3339 日期时间",
    ),
    ("input is not UTF-8", "输入不是 UTF-8"),
    ("pipeline not wired", "处理流程未接入"),
];

/// `detail` in `lang`: translated only if it is one of [`DETAIL_ZH`].
pub fn detail_in(detail: &str, lang: Lang) -> &str {
    match lang {
        Lang::En => detail,
        Lang::Zh => DETAIL_ZH
            .iter()
            .find(|(en, _)| *en == detail)
            .map_or(detail, |(_, zh)| zh),
    }
}

/// An RFC 9457 problem: a catalogue type plus a detail safe to show the
/// caller. `detail` must never contain secrets or whole payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemType,
    pub detail: String,
    pub exchange_id: Option<String>,
}

impl From<schema_mapper::MapError> for Problem {
    fn from(e: schema_mapper::MapError) -> Self {
        Problem::new(ProblemType::of_mapping(&e), e.to_string())
    }
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            exchange_id: None,
        }
    }

    pub fn with_exchange(mut self, exchange_id: impl Into<String>) -> Self {
        self.exchange_id = Some(exchange_id.into());
        self
    }

    /// Names the request's exchange, unless the problem already names
    /// another (a conflict names the exchange it collides with).
    pub fn about_exchange(self, exchange_id: impl Into<String>) -> Self {
        match self.exchange_id {
            Some(_) => self,
            None => self.with_exchange(exchange_id),
        }
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The problem+json body, in English.
    pub fn to_json(&self) -> Value {
        self.to_json_in(Lang::En)
    }

    /// The problem+json body with `title` (always) and `detail` (when it is
    /// a fixed text, see [`DETAIL_ZH`]) in `lang`.
    pub fn to_json_in(&self, lang: Lang) -> Value {
        let mut body = json!({
            "type": self.kind.uri(),
            "title": self.kind.title_in(lang),
            "status": self.kind.status(),
            "detail": detail_in(&self.detail, lang),
        });
        if let (Some(id), Some(obj)) = (&self.exchange_id, body.as_object_mut()) {
            obj.insert("exchangeId".into(), Value::String(id.clone()));
        }
        body
    }

    /// Parses a problem+json body received from a peer (delivery worker,
    /// conformance suite). Unknown types are reported as `None`.
    pub fn from_json(body: &Value) -> Option<Self> {
        let kind = ProblemType::from_slug(body.get("type")?.as_str()?)?;
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let exchange_id = body.get("exchangeId").and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            kind,
            detail,
            exchange_id,
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.slug(), self.detail)
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_indexed_by_declaration_order() {
        for (i, row) in CATALOGUE.iter().enumerate() {
            assert_eq!(row.kind as usize, i, "row {} out of order", row.slug);
        }
        assert_eq!(CATALOGUE.len(), ProblemType::NotFound as usize + 1);
    }

    #[test]
    fn slugs_round_trip_and_are_unique() {
        for row in CATALOGUE {
            assert_eq!(ProblemType::from_slug(row.slug), Some(row.kind));
            assert_eq!(ProblemType::from_slug(&row.kind.uri()), Some(row.kind));
            assert_eq!(CATALOGUE.iter().filter(|r| r.slug == row.slug).count(), 1);
            let serde_slug = serde_json::to_value(row.kind).ok();
            assert_eq!(serde_slug, Some(Value::String(row.slug.into())));
        }
    }

    #[test]
    fn every_type_has_a_chinese_title() {
        for row in CATALOGUE {
            assert!(!row.title_zh.is_empty(), "{}", row.slug);
            assert_ne!(row.title_zh, row.title, "{}", row.slug);
            assert!(
                row.title_zh
                    .chars()
                    .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
                "{} title_zh has no Chinese",
                row.slug
            );
        }
    }

    #[test]
    fn accept_language_picks_by_q_then_order() {
        for (header, want) in [
            ("", Lang::En),
            ("zh-CN", Lang::Zh),
            ("zh", Lang::Zh),
            ("ZH-tw", Lang::Zh),
            ("en", Lang::En),
            ("fr", Lang::En),
            ("*", Lang::En),
            ("fr, zh;q=0.5", Lang::Zh),
            ("en;q=0.5, zh-CN;q=0.9", Lang::Zh),
            ("zh-CN;q=0.4, en;q=0.8", Lang::En),
            ("zh-CN, en", Lang::Zh),
            ("en, zh-CN", Lang::En),
            ("zh;q=0, en;q=0.1", Lang::En),
            ("zh;q=0", Lang::En),
            ("zh-CN;q=bogus", Lang::Zh),
            ("zh-CN,zh;q=0.9,en-US;q=0.8,en;q=0.7", Lang::Zh),
        ] {
            assert_eq!(Lang::from_accept_language(header), want, "{header:?}");
        }
    }

    #[test]
    fn cli_lang_prefers_flag_then_posix_env_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(Lang::from_cli(None, env(&[])), Lang::En);
        assert_eq!(Lang::from_cli(None, env(&[("LANG", "zh_CN.UTF-8")])), Lang::Zh);
        assert_eq!(
            Lang::from_cli(None, env(&[("LANG", "zh_CN.UTF-8"), ("LC_ALL", "C")])),
            Lang::En
        );
        assert_eq!(
            Lang::from_cli(Some("en"), env(&[("LANG", "zh_CN.UTF-8")])),
            Lang::En
        );
        assert_eq!(Lang::from_cli(Some("zh"), env(&[])), Lang::Zh);
    }

    #[test]
    fn localized_json_changes_title_and_fixed_details_only() {
        let p = Problem::new(ProblemType::NotFound, "no such exchange").with_exchange("ex-9");
        let (en, zh) = (p.to_json(), p.to_json_in(Lang::Zh));
        assert_eq!(en["title"], "No such resource");
        assert_eq!(zh["title"], "资源不存在");
        assert_eq!(zh["detail"], "没有这个交换");
        for member in ["type", "status", "exchangeId"] {
            assert_eq!(en[member], zh[member], "{member}");
        }
        let free = Problem::new(ProblemType::ChainBroken, "link 2 names the wrong digest");
        assert_eq!(
            free.to_json_in(Lang::Zh)["detail"],
            "link 2 names the wrong digest"
        );
        assert_eq!(
            free.to_json_in(Lang::Zh)["title"],
            ProblemType::ChainBroken.title_in(Lang::Zh)
        );
    }

    #[test]
    fn problem_json_has_required_members() {
        let p = Problem::new(ProblemType::InvalidSignature, "bad").with_exchange("ex-1");
        let v = p.to_json();
        assert_eq!(v["type"], "urn:bashu:problem:invalid-signature");
        assert_eq!(v["status"], 422);
        assert_eq!(v["exchangeId"], "ex-1");
        assert_eq!(Problem::from_json(&v), Some(p));
    }
}
