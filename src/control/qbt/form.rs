//! A request's parameters as qBittorrent reads them: a GET's query string; a POST's body
//! (`application/x-www-form-urlencoded`, or the parts of `multipart/form-data`), its query
//! string ignored (4.5.2 `WebApplication::processRequest`).

/// Most parameters one request may carry.
const MAX_FIELDS: usize = 256;
/// Most files one `torrents/add` may carry.
const MAX_FILES: usize = 100;

/// A file part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    pub filename: String,
    pub data: Vec<u8>,
}

/// The parameters of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    fields: Vec<(String, String)>,
    pub files: Vec<FilePart>,
}

/// A body that is not what its `Content-Type` says (qBittorrent: 400, empty body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Params {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` as qBittorrent reads a boolean (`true`, case-insensitive); absent: `None`.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).map(|v| v.eq_ignore_ascii_case("true"))
    }

    /// `key` as an integer; absent or unparsable: `None` (qBittorrent's `toInt` gives 0 for
    /// garbage; callers choose their default).
    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| v.trim().parse().ok())
    }

    pub fn float(&self, key: &str) -> Option<f64> {
        self.get(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite())
    }

    /// Reads a request: `query` for GET (and HEAD), the body for everything else.
    pub fn read(
        method: &axum::http::Method,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Params, Malformed> {
        use axum::http::Method;
        if matches!(*method, Method::GET | Method::HEAD) {
            return Ok(Params {
                fields: urlencoded(query.unwrap_or("").as_bytes()),
                files: Vec::new(),
            });
        }
        let ct = content_type.unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("multipart/form-data") {
            let boundary = ct
                .split(';')
                .skip(1)
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.trim_matches('"'))
                .filter(|b| !b.is_empty() && b.len() <= 200)
                .ok_or(Malformed("multipart without a boundary"))?;
            return multipart(body, boundary);
        }
        // qBittorrent reads any other body as a form.
        Ok(Params {
            fields: urlencoded(body),
            files: Vec::new(),
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes (and `+` to space).
pub fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    s.get(i + 1).and_then(|b| hex(*b)),
                    s.get(i + 2).and_then(|b| hex(*b)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn urlencoded(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .take(MAX_FIELDS)
        .map(|pair| {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A `Content-Disposition` parameter (`name="x"`).
fn disposition_param(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Parses `multipart/form-data`. Like qBittorrent, a body whose last part lacks its closing
/// boundary is read up to there; a part without `Content-Disposition`, or a body that does not
/// start with the boundary, is malformed.
fn multipart(body: &[u8], boundary: &str) -> Result<Params, Malformed> {
    let delim = format!("--{boundary}");
    let mut pos = find(body, delim.as_bytes(), 0).ok_or(Malformed("no boundary in the body"))?;
    if body[..pos].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(Malformed("text before the first boundary"));
    }
    let next_delim = format!("\r\n--{boundary}");
    let mut out = Params::default();
    loop {
        pos += delim.len();
        if body.get(pos..pos + 2) == Some(b"--") {
            break;
        }
        if body.get(pos..pos + 2) != Some(b"\r\n") {
            break;
        }
        pos += 2;
        let head_end = match find(body, b"\r\n\r\n", pos) {
            Some(e) => e,
            None => break,
        };
        let head = String::from_utf8_lossy(&body[pos..head_end]);
        let content_start = head_end + 4;
        let (content_end, next) = match find(body, next_delim.as_bytes(), content_start) {
            Some(e) => (e, Some(e + 2)),
            None => (body.len(), None),
        };
        let disposition = head
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| v.trim().to_string())
            })
            .ok_or(Malformed("a part without Content-Disposition"))?;
        let name = disposition_param(&disposition, "name").unwrap_or_default();
        let data = &body[content_start..content_end];
        if next.is_none() {
            // no closing boundary: qBittorrent drops the unfinished part
            break;
        }
        match disposition_param(&disposition, "filename") {
            Some(filename) => {
                if out.files.len() >= MAX_FILES {
                    return Err(Malformed("too many files"));
                }
                out.files.push(FilePart {
                    filename,
                    data: data.to_vec(),
                })
            }
            None => {
                if out.fields.len() >= MAX_FIELDS {
                    return Err(Malformed("too many fields"));
                }
                out.fields
                    .push((name, String::from_utf8_lossy(data).into_owned()))
            }
        }
        match next {
            Some(n) => pos = n,
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn get_reads_the_query_post_the_body() {
        let p = Params::read(&Method::GET, Some("a=1&b=x%20y+z&c"), None, b"a=2").unwrap();
        assert_eq!(
            (p.get("a"), p.get("b"), p.get("c")),
            (Some("1"), Some("x y z"), Some(""))
        );
        let p = Params::read(
            &Method::POST,
            Some("a=1"),
            Some("application/x-www-form-urlencoded"),
            b"hashes=ab%7Ccd&deleteFiles=TRUE",
        )
        .unwrap();
        assert_eq!(p.get("a"), None, "a POST's query string is ignored");
        assert_eq!(p.get("hashes"), Some("ab|cd"));
        assert_eq!(p.flag("deleteFiles"), Some(true));
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }

    #[test]
    fn multipart_parts_and_malformed_bodies() {
        let ct = "multipart/form-data; boundary=XyZ";
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"savepath\"\r\n\r\n/data\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"torrents\"; filename=\"a.torrent\"\r\n\
Content-Type: application/x-bittorrent\r\n\r\nd4:infode\r\n--XyZ--\r\n";
        let p = Params::read(&Method::POST, None, Some(ct), body).unwrap();
        assert_eq!(p.get("savepath"), Some("/data"));
        assert_eq!(
            p.files,
            vec![FilePart {
                filename: "a.torrent".into(),
                data: b"d4:infode".to_vec()
            }]
        );
        let no_boundary = Params::read(&Method::POST, None, Some("multipart/form-data"), body);
        assert!(no_boundary.is_err());
        assert!(Params::read(&Method::POST, None, Some(ct), b"hello").is_err());
        let no_disp = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--\r\n";
        assert!(Params::read(&Method::POST, None, Some(ct), no_disp).is_err());
        let unfinished = b"--XyZ\r\nContent-Disposition: form-data; name=\"urls\"\r\n\r\nmagnet:";
        let p = Params::read(&Method::POST, None, Some(ct), unfinished).unwrap();
        assert_eq!(p.get("urls"), None, "an unclosed last part is dropped");
    }
}
