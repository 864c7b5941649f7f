//! The Bookinfo demo's behaviour, as pure functions the `bookinfo` binary serves: the records,
//! the reviews with and without stars, the product page, the headers each hop forwards, and
//! who the user is. The timeouts are Bookinfo's, because the traffic-management tasks are
//! about them: productpage gives reviews 3 s and one retry (6 s in all), reviews v2 gives
//! ratings 10 s and v3 2.5 s.

use std::time::Duration;

use serde_json::{Value, json};

/// The port every Bookinfo service listens on.
pub const PORT: u16 = 9080;
/// The Bookinfo services, in the order the demo deploys them.
pub const APPS: [&str; 4] = ["productpage", "details", "reviews", "ratings"];
/// productpage's budget per call to reviews.
pub const REVIEWS_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times productpage calls reviews before giving up.
pub const REVIEWS_ATTEMPTS: usize = 2;
/// productpage's budget for details.
pub const DETAILS_TIMEOUT: Duration = Duration::from_secs(3);
/// What productpage shows when reviews fails.
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
/// What productpage shows when details fails.
pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
/// What reviews v2 and v3 show when ratings fails.
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// The headers every hop copies from its request to the calls it makes: tracing (W3C, B3,
/// Envoy's request id) and the user.
pub const FORWARDED: [&str; 12] = [
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "x-client-trace-id",
    "end-user",
];

/// The star colour of a reviews version, and its budget for ratings (`None`: v1 calls no one).
pub fn reviews_flavour(version: &str) -> Option<(&'static str, Duration)> {
    match version {
        "v2" => Some(("black", Duration::from_secs(10))),
        "v3" => Some(("red", Duration::from_millis(2500))),
        _ => None,
    }
}

/// The user of a productpage request: the `user` query parameter, else the `user` cookie.
pub fn user(query: Option<&str>, cookie: Option<&str>) -> Option<String> {
    let from_query = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("user=").map(str::to_owned));
    let from_cookie = || {
        cookie
            .into_iter()
            .flat_map(|c| c.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("user=").map(str::to_owned))
    };
    from_query.or_else(from_cookie).filter(|u| !u.is_empty())
}

/// The one book.
pub fn product() -> Value {
    json!({
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of William Shakespeare's early plays."
    })
}

/// details' fixed record.
pub fn details() -> Value {
    json!({
        "id": 0,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890"
    })
}

/// ratings' answer.
pub fn ratings() -> Value {
    json!({"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
}

/// reviews' answer: `ratings` is what ratings said (`None`: it failed) for v2 and v3, and
/// nothing for v1.
pub fn reviews(version: &str, pod: &str, ratings: Option<Option<&Value>>) -> Value {
    let texts = [
        (
            "Reviewer1",
            "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
        ),
        (
            "Reviewer2",
            "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
        ),
    ];
    let colour = reviews_flavour(version).map(|(c, _)| c);
    let list: Vec<Value> = texts
        .iter()
        .map(|(reviewer, text)| {
            let mut review = json!({"reviewer": reviewer, "text": text});
            if let (Some(answer), Some(colour)) = (ratings, colour) {
                review["rating"] = match answer.and_then(|r| r["ratings"][reviewer].as_u64()) {
                    Some(stars) => json!({"stars": stars, "color": colour}),
                    None => json!({"error": RATINGS_UNAVAILABLE}),
                };
            }
            review
        })
        .collect();
    json!({"id": "0", "podname": pod, "version": version, "reviews": list})
}

/// productpage's JSON (`/api/v1/products/0`): the product with what details and reviews said,
/// or why they could not say it.
pub fn product_view(details: Option<&Value>, reviews: Option<&Value>, user: Option<&str>) -> Value {
    let mut view = product();
    view["user"] = json!(user);
    view["details"] = details.cloned().unwrap_or_else(|| json!({"error": DETAILS_UNAVAILABLE}));
    view["reviews"] = reviews.cloned().unwrap_or_else(|| json!({"error": REVIEWS_UNAVAILABLE}));
    view
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// productpage's HTML (`/productpage`), from [`product_view`].
pub fn page(view: &Value) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Simple Bookstore App</title></head><body>\n",
    );
    if let Some(user) = view["user"].as_str() {
        html.push_str(&format!("<p class=\"user\">Signed in as {}</p>\n", escape(user)));
    }
    html.push_str(&format!("<h1>{}</h1>\n", escape(view["title"].as_str().unwrap_or_default())));
    html.push_str("<h2>Book Details</h2>\n");
    match view["details"]["error"].as_str() {
        Some(error) => html.push_str(&format!("<p class=\"error\">{}</p>\n", escape(error))),
        None => {
            html.push_str("<dl>\n");
            for key in ["type", "pages", "publisher", "language", "ISBN-10", "ISBN-13"] {
                let value = &view["details"][key];
                let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                html.push_str(&format!("<dt>{key}</dt><dd>{}</dd>\n", escape(&value)));
            }
            html.push_str("</dl>\n");
        }
    }
    html.push_str("<h2>Book Reviews</h2>\n");
    match view["reviews"]["error"].as_str() {
        Some(error) => html.push_str(&format!("<p class=\"error\">{}</p>\n", escape(error))),
        None => {
            for review in view["reviews"]["reviews"].as_array().into_iter().flatten() {
                html.push_str(&format!(
                    "<blockquote><p>{}</p><small>{}</small>",
                    escape(review["text"].as_str().unwrap_or_default()),
                    escape(review["reviewer"].as_str().unwrap_or_default())
                ));
                if let Some(error) = review["rating"]["error"].as_str() {
                    html.push_str(&format!("<p class=\"error\">{}</p>", escape(error)));
                } else if let Some(stars) = review["rating"]["stars"].as_u64() {
                    let colour = review["rating"]["color"].as_str().unwrap_or("black");
                    html.push_str(&format!(
                        "<p class=\"stars {colour}\" style=\"color:{colour}\">{}{}</p>",
                        "\u{2605}".repeat(usize::try_from(stars).unwrap_or(0).min(5)),
                        "\u{2606}"
                            .repeat(5usize.saturating_sub(usize::try_from(stars).unwrap_or(0)))
                    ));
                }
                html.push_str("</blockquote>\n");
            }
            html.push_str(&format!(
                "<p class=\"served-by\">Reviews served by: {} ({})</p>\n",
                escape(view["reviews"]["podname"].as_str().unwrap_or_default()),
                escape(view["reviews"]["version"].as_str().unwrap_or_default())
            ));
        }
    }
    html.push_str("</body></html>\n");
    html
}

/// What a person sees on the page, in a few words: which reviews version answered and how
/// (`v1`, `v2 black stars`, `v3 red stars`, `v2 ratings unavailable`, `reviews unavailable`).
/// The demo and the tests count answers by it.
pub fn summary(view: &Value) -> String {
    if view["reviews"]["error"].is_string() {
        return "reviews unavailable".to_owned();
    }
    let version = view["reviews"]["version"].as_str().unwrap_or("?").to_owned();
    let first = &view["reviews"]["reviews"][0]["rating"];
    if first["error"].is_string() {
        format!("{version} ratings unavailable")
    } else if let Some(colour) = first["color"].as_str() {
        format!("{version} {colour} stars")
    } else {
        version
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_user_comes_from_the_query_then_the_cookie() {
        assert_eq!(user(Some("a=1&user=jason"), Some("user=other")).as_deref(), Some("jason"));
        assert_eq!(user(None, Some("theme=dark; user=jason")).as_deref(), Some("jason"));
        assert_eq!(user(Some("user="), None), None);
        assert_eq!(user(None, None), None);
    }

    #[test]
    fn each_version_of_reviews_looks_as_bookinfo_does() {
        let ratings = ratings();
        let v1 = reviews("v1", "reviews-v1", None);
        let v2 = reviews("v2", "reviews-v2", Some(Some(&ratings)));
        let v3 = reviews("v3", "reviews-v3", Some(Some(&ratings)));
        let broken = reviews("v2", "reviews-v2", Some(None));
        let view = |r: &Value| product_view(Some(&details()), Some(r), None);
        assert_eq!(summary(&view(&v1)), "v1");
        assert_eq!(summary(&view(&v2)), "v2 black stars");
        assert_eq!(summary(&view(&v3)), "v3 red stars");
        assert_eq!(summary(&view(&broken)), "v2 ratings unavailable");
        assert_eq!(summary(&product_view(None, None, None)), "reviews unavailable");
        assert_eq!(v2["reviews"][1]["rating"]["stars"], 4);
    }

    #[test]
    fn the_page_shows_stars_errors_and_who_served() {
        let ratings = ratings();
        let html = page(&product_view(
            Some(&details()),
            Some(&reviews("v3", "reviews-v3", Some(Some(&ratings)))),
            Some("jason"),
        ));
        assert!(html.contains("Signed in as jason"));
        assert!(html.contains("class=\"stars red\""));
        assert!(html.contains("\u{2605}\u{2605}\u{2605}\u{2605}\u{2606}"));
        assert!(html.contains("Reviews served by: reviews-v3 (v3)"));
        let down = page(&product_view(None, None, Some("<script>")));
        assert!(down.contains(REVIEWS_UNAVAILABLE) && down.contains(DETAILS_UNAVAILABLE));
        assert!(down.contains("&lt;script&gt;"));
    }
}
