//! Business hours of a team: opening intervals per weekday in an IANA time zone, whether they
//! are open at an instant, and when they open next, said to the customer in their language.
//!
//! Written as JSON on the team: `{"timezone": "Europe/Madrid", "mon": "09:00-18:00",
//! "tue": "09:00-13:00,15:00-18:00", ...}`. A day left out is closed; `{}` is always open.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// Opening hours; `None` inside means always open.
#[derive(Debug, Clone, PartialEq)]
pub struct Hours(Option<Schedule>);

#[derive(Debug, Clone, PartialEq)]
struct Schedule {
    zone: Tz,
    /// Per weekday from Monday: (start, end) minutes after midnight, end exclusive.
    days: [Vec<(u32, u32)>; 7],
}

fn minutes(text: &str) -> Result<u32, String> {
    let time = NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("{text:?} is not a time like 09:30"))?;
    Ok(time.hour() * 60 + time.minute())
}

impl Hours {
    pub fn always() -> Hours {
        Hours(None)
    }

    /// Parse the team's JSON; the error says what is wrong.
    pub fn parse(json: &str) -> Result<Hours, String> {
        let value: serde_json::Value = if json.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(json).map_err(|error| format!("not JSON: {error}"))?
        };
        let object = value.as_object().ok_or("must be a JSON object")?;
        if object.is_empty() {
            return Ok(Hours(None));
        }
        let zone_name = object
            .get("timezone")
            .and_then(|zone| zone.as_str())
            .ok_or("timezone is required (an IANA name like Europe/Madrid)")?;
        let zone: Tz = zone_name
            .parse()
            .map_err(|_| format!("unknown time zone {zone_name:?}"))?;
        let mut days: [Vec<(u32, u32)>; 7] = Default::default();
        for key in object.keys() {
            if key != "timezone" && !DAYS.iter().any(|(name, _)| name == key) {
                return Err(format!("unknown key {key:?} (mon..sun, timezone)"));
            }
        }
        for (index, (name, _)) in DAYS.iter().enumerate() {
            let Some(spec) = object.get(*name) else {
                continue;
            };
            let spec = spec
                .as_str()
                .ok_or_else(|| format!("{name} must be text like \"09:00-18:00\""))?;
            for interval in spec.split(',').filter(|part| !part.trim().is_empty()) {
                let (start, end) = interval
                    .split_once('-')
                    .ok_or_else(|| format!("{name}: {interval:?} is not like 09:00-18:00"))?;
                let (start, end) = (minutes(start)?, minutes(end)?);
                if end <= start {
                    return Err(format!("{name}: {interval:?} ends before it starts"));
                }
                days[index].push((start, end));
            }
            days[index].sort();
        }
        Ok(Hours(Some(Schedule { zone, days })))
    }

    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let Some(schedule) = &self.0 else {
            return true;
        };
        let local = at.with_timezone(&schedule.zone);
        let day = local.weekday().num_days_from_monday() as usize;
        let minute = local.hour() * 60 + local.minute();
        schedule.days[day]
            .iter()
            .any(|(start, end)| (*start..*end).contains(&minute))
    }

    /// When the team opens next after `at` (in its own zone); None if it never opens.
    pub fn next_open(&self, at: DateTime<Utc>) -> Option<DateTime<Tz>> {
        let schedule = self.0.as_ref()?;
        let local = at.with_timezone(&schedule.zone);
        for offset in 0..8 {
            let date = (local + Duration::days(offset)).date_naive();
            let day = date.weekday().num_days_from_monday() as usize;
            for (start, _) in &schedule.days[day] {
                let naive = date.and_hms_opt(start / 60, start % 60, 0)?;
                let Some(opening) = schedule.zone.from_local_datetime(&naive).earliest() else {
                    continue;
                };
                if opening > local {
                    return Some(opening);
                }
            }
        }
        None
    }

    /// What to tell a customer who writes out of hours, in `language` (en, es, ca).
    pub fn closed_notice(&self, at: DateTime<Utc>, language: Option<&str>) -> String {
        let when = self.next_open(at).map(|opening| {
            let day = opening.weekday().num_days_from_monday() as usize;
            let names: [&str; 7] = match language {
                Some("es") => [
                    "lunes",
                    "martes",
                    "miércoles",
                    "jueves",
                    "viernes",
                    "sábado",
                    "domingo",
                ],
                Some("ca") => [
                    "dilluns",
                    "dimarts",
                    "dimecres",
                    "dijous",
                    "divendres",
                    "dissabte",
                    "diumenge",
                ],
                _ => [
                    "Monday",
                    "Tuesday",
                    "Wednesday",
                    "Thursday",
                    "Friday",
                    "Saturday",
                    "Sunday",
                ],
            };
            (
                names[day],
                opening.format("%H:%M").to_string(),
                opening.timezone().name().to_string(),
            )
        });
        match (language, when) {
            (Some("es"), Some((day, time, zone))) => format!(
                "Ahora mismo nuestro equipo no está disponible. Volvemos el {day} a las {time} ({zone}); tu conversación queda en espera y te responderemos entonces."
            ),
            (Some("ca"), Some((day, time, zone))) => format!(
                "Ara mateix el nostre equip no està disponible. Tornem el {day} a les {time} ({zone}); la teva conversa queda en espera i et respondrem aleshores."
            ),
            (_, Some((day, time, zone))) => format!(
                "Our team is away right now. We are back on {day} at {time} ({zone}); your conversation is waiting and we will answer then."
            ),
            (Some("es"), None) => "Ahora mismo nuestro equipo no está disponible.".into(),
            (Some("ca"), None) => "Ara mateix el nostre equip no està disponible.".into(),
            (_, None) => "Our team is away right now.".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn open_and_next_opening_in_the_teams_zone() {
        let hours = Hours::parse(
            r#"{"timezone": "Europe/Madrid", "mon": "09:00-13:00,15:00-18:00", "fri": "09:00-14:00"}"#,
        )
        .unwrap();
        // Monday 2026-03-02 10:00 in Madrid is 09:00 UTC.
        assert!(hours.is_open(at("2026-03-02T09:00:00Z")));
        // 13:30 Madrid: the lunch gap.
        assert!(!hours.is_open(at("2026-03-02T12:30:00Z")));
        let next = hours.next_open(at("2026-03-02T12:30:00Z")).unwrap();
        assert_eq!(next.format("%a %H:%M").to_string(), "Mon 15:00");
        // Friday evening: next is Monday morning.
        let next = hours.next_open(at("2026-03-06T18:00:00Z")).unwrap();
        assert_eq!(next.format("%a %d %H:%M").to_string(), "Mon 09 09:00");
        let notice = hours.closed_notice(at("2026-03-06T18:00:00Z"), Some("en"));
        assert!(
            notice.contains("Monday at 09:00 (Europe/Madrid)"),
            "{notice}"
        );
        let notice = hours.closed_notice(at("2026-03-06T18:00:00Z"), Some("ca"));
        assert!(notice.contains("dilluns a les 09:00"), "{notice}");
    }

    #[test]
    fn always_open_and_bad_input() {
        assert!(Hours::parse("{}").unwrap().is_open(Utc::now()));
        assert!(Hours::parse("").unwrap().is_open(Utc::now()));
        for bad in [
            r#"{"mon": "09:00-18:00"}"#,
            r#"{"timezone": "Mars/Olympus"}"#,
            r#"{"timezone": "UTC", "mon": "18:00-09:00"}"#,
            r#"{"timezone": "UTC", "monday": "09:00-10:00"}"#,
            r#"{"timezone": "UTC", "mon": "9am-5pm"}"#,
            "[]",
        ] {
            assert!(Hours::parse(bad).is_err(), "{bad}");
        }
        let closed = Hours::parse(r#"{"timezone": "UTC"}"#).unwrap();
        assert!(!closed.is_open(Utc::now()));
        assert!(closed.next_open(Utc::now()).is_none());
    }
}
