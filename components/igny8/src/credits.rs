//! The seed's credit costs (002 §10.3) and the per-execution total of a rule's
//! actions. Credits are checked and deducted before the AI call (002 §10.4,
//! "Check credits, deduct before request").

use serde_json::Value as Json;

/// Credits one action costs, or `None` for an action type the runner does not know.
/// `words` is the action's requested length (content and optimisation are priced by it).
pub fn cost(action: &str, words: i64) -> Option<i64> {
    let per = |n: i64| (words.max(1) + n - 1) / n;
    Some(match action {
        "auto_cluster" => 10,
        "generate_ideas" => 15,
        "generate_content" => per(100),
        "generate_images" => 5,
        "generate_image_prompts" => 2,
        "auto_link" => 8,
        "optimize_content" => per(200),
        "generate_site_structure" => 50,
        "generate_site_page" => 20,
        "publish" => 0,
        _ => return None,
    })
}

/// Whether an action calls the AI (and so makes a content row).
pub fn calls_ai(action: &str) -> bool {
    action != "publish"
}

/// The type and requested word count of each action.
pub fn actions(list: &Json) -> Vec<(String, i64, Json)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|action| {
                    let kind = action
                        .get("type")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string();
                    let params = action.get("params").cloned().unwrap_or(Json::Null);
                    let words = params
                        .get("word_count")
                        .and_then(Json::as_i64)
                        .unwrap_or(1000);
                    (kind, words, params)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The whole run's cost, or the first unknown action type.
pub fn total(list: &Json) -> Result<i64, String> {
    let mut sum = 0;
    for (kind, words, _) in actions(list) {
        sum += cost(&kind, words).ok_or_else(|| format!("unknown action type {kind:?}"))?;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_costs() {
        assert_eq!(cost("generate_content", 1500), Some(15));
        assert_eq!(
            cost("generate_content", 1550),
            Some(16),
            "1 credit per 100 words, rounded up"
        );
        assert_eq!(cost("optimize_content", 1000), Some(5));
        assert_eq!(cost("auto_cluster", 0), Some(10));
        assert_eq!(cost("generate_site_structure", 0), Some(50));
        assert_eq!(cost("nope", 0), None);
        let list = serde_json::json!([{"type": "generate_content", "params": {"word_count": 1500}}, {"type": "publish"}]);
        assert_eq!(total(&list), Ok(15));
    }
}
