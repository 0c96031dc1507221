//! Blocks to HTML: a page is a list of blocks (`hero`, `text`, `image`, `cta`),
//! the site a title and its pages by path (002 L449–456: `site.json`, `pages/`).

use serde_json::Value as Json;
use std::fmt::Write as _;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn attr_url(s: &str) -> String {
    let safe = s.starts_with("https://")
        || s.starts_with("http://")
        || s.starts_with('/')
        || s.starts_with('#');
    if safe { escape(s) } else { "#".into() }
}

/// One page of a site as a whole HTML document.
pub fn page(site_title: &str, nav: &[String], blocks: &Json) -> String {
    let mut html = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{0}</title><style>body{{font:17px/1.5 system-ui,sans-serif;max-width:52rem;margin:0 auto;padding:0 1rem}}\
         .hero{{padding:3rem 0}}.cta{{display:inline-block;padding:.6rem 1.2rem;background:#246;color:#fff}}</style><nav>",
        escape(site_title)
    );
    for path in nav {
        let _ = write!(html, "<a href=\"{0}\">{0}</a> ", escape(path));
    }
    html.push_str("</nav><main>");
    for block in blocks.as_array().into_iter().flatten() {
        let s = |k: &str| block.get(k).and_then(Json::as_str).unwrap_or("");
        let _ = match s("type") {
            "hero" => write!(
                html,
                "<section class=hero><h1>{}</h1><p>{}</p></section>",
                escape(s("title")),
                escape(s("subtitle"))
            ),
            "text" => write!(html, "<p>{}</p>", escape(s("body"))),
            "image" => write!(
                html,
                "<img src=\"{}\" alt=\"{}\" loading=lazy>",
                attr_url(s("src")),
                escape(s("alt"))
            ),
            "cta" => write!(
                html,
                "<a class=cta href=\"{}\">{}</a>",
                attr_url(s("href")),
                escape(s("label"))
            ),
            _ => Ok(()),
        };
    }
    html.push_str("</main></html>");
    html
}

/// Why a draft cannot be published, if it cannot.
pub fn check(pages: &Json) -> Result<(), String> {
    let map = pages
        .as_object()
        .ok_or("pages must be an object of path → blocks")?;
    if !map.contains_key("/") {
        return Err("pages must include \"/\"".into());
    }
    for (path, blocks) in map {
        let valid = path.starts_with('/')
            && path.len() <= 200
            && !path.contains(['?', '#', ' ', '"', '<', '>']);
        if !valid {
            return Err(format!(
                "page path {path:?} must start with / and hold no ?, #, spaces or quotes"
            ));
        }
        if !blocks.is_array() {
            return Err(format!("page {path:?} must be a list of blocks"));
        }
    }
    Ok(())
}
