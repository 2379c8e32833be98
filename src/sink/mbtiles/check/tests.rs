use super::*;

fn stated(metadata: &[(&str, &str)]) -> Vec<String> {
    let mut findings = Findings::default();
    let map = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    check_values(&mut findings, &map);
    findings.finish().into_iter().map(|f| f.message).collect()
}

#[test]
fn what_the_writer_writes_passes() {
    let json = r#"{"vector_layers":[{"id":"a","fields":{"n":"Number"},"minzoom":0,"maxzoom":9}]}"#;
    let found = stated(&[
        ("name", "f"),
        ("format", "pbf"),
        ("compression", "gzip"),
        ("bounds", "10,20,11,21"),
        ("center", "10.5,20.5,2"),
        ("minzoom", "0"),
        ("maxzoom", "9"),
        ("json", json),
    ]);
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn missing_keys_and_bad_values_are_named() {
    let found = stated(&[("format", "webp"), ("minzoom", "x"), ("bounds", "1,2,3")]);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].contains("no `name`"));
    assert!(found[1].contains("`webp`"));
    let found = stated(&[("name", "f"), ("format", "pbf")]);
    assert!(found[0].contains("no `json`"), "{found:?}");
}
