//! `iam:SimulatePrincipalPolicy` over the raw Query protocol: may this role perform these
//! actions on this resource? Used by the permission preflight to prove an ECS task's
//! execution role can pull its image, read its secrets and write its logs before anything is
//! registered. The XML answer is read with aws-smithy-xml (already in the build for STS).

use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};

use super::raw::{RawClient, RawError};

/// One action's verdict on one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub action: String,
    pub resource: String,
    /// `allowed`, `explicitDeny` or `implicitDeny`.
    pub decision: String,
    /// Context keys the policies' conditions use that the request did not supply.
    pub missing_context: Vec<String>,
}

impl Evaluation {
    pub fn allowed(&self) -> bool {
        self.decision == "allowed"
    }
}

/// Simulate `actions` on `resource` (`None`: `*`) for the role `role_arn`, with string
/// context entries (`kms:ViaService` → `ssm.us-east-1.amazonaws.com`).
pub async fn simulate(
    iam: &RawClient,
    role_arn: &str,
    actions: &[&str],
    resource: Option<&str>,
    context: &[(&str, &str)],
) -> Result<Vec<Evaluation>, RawError> {
    let mut params = vec![("PolicySourceArn".to_string(), role_arn.to_string())];
    for (i, a) in actions.iter().enumerate() {
        params.push((format!("ActionNames.member.{}", i + 1), a.to_string()));
    }
    if let Some(r) = resource {
        params.push(("ResourceArns.member.1".into(), r.to_string()));
    }
    for (i, (key, value)) in context.iter().enumerate() {
        let entry = format!("ContextEntries.member.{}", i + 1);
        params.push((format!("{entry}.ContextKeyName"), key.to_string()));
        params.push((format!("{entry}.ContextKeyValues.member.1"), value.to_string()));
        params.push((format!("{entry}.ContextKeyType"), "string".into()));
    }
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    // Bounded: a handful of actions fit one page; follow at most 10 markers.
    for _ in 0..10 {
        let mut page_params = params.clone();
        if let Some(m) = &marker {
            page_params.push(("Marker".into(), m.clone()));
        }
        let xml = iam.query("SimulatePrincipalPolicy", "2010-05-08", &page_params).await?;
        let page = parse(&xml).map_err(|message| RawError::Service {
            service: "IAM",
            op: "SimulatePrincipalPolicy".into(),
            code: "UnreadableAnswer".into(),
            message,
        })?;
        out.extend(page.results);
        match page.marker {
            Some(m) if page.truncated => marker = Some(m),
            _ => break,
        }
    }
    Ok(out)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub results: Vec<Evaluation>,
    pub truncated: bool,
    pub marker: Option<String>,
}

/// Read a SimulatePrincipalPolicy answer: `…Result/EvaluationResults/member/{EvalActionName,
/// EvalResourceName, EvalDecision}`, `IsTruncated`, `Marker`.
pub fn parse(xml: &str) -> Result<Page, String> {
    let mut doc = Document::new(xml);
    let mut root = doc.root_element().map_err(|e| e.to_string())?;
    let mut page = Page::default();
    while let Some(mut result) = root.next_tag() {
        if !result.start_el().matches("SimulatePrincipalPolicyResult") {
            continue;
        }
        while let Some(mut tag) = result.next_tag() {
            let name = tag.start_el().local().to_string();
            match name.as_str() {
                "EvaluationResults" => {
                    while let Some(mut member) = tag.next_tag() {
                        page.results.push(evaluation(&mut member)?);
                    }
                }
                "IsTruncated" => page.truncated = try_data(&mut tag).map_err(|e| e.to_string())? == "true",
                "Marker" => page.marker = Some(try_data(&mut tag).map_err(|e| e.to_string())?.into_owned()),
                _ => {}
            }
        }
    }
    Ok(page)
}

fn evaluation(member: &mut ScopedDecoder) -> Result<Evaluation, String> {
    let mut e = Evaluation {
        action: String::new(),
        resource: "*".into(),
        decision: String::new(),
        missing_context: Vec::new(),
    };
    while let Some(mut field) = member.next_tag() {
        let name = field.start_el().local().to_string();
        let text = |field: &mut ScopedDecoder| try_data(field).map(|s| s.into_owned()).map_err(|e| e.to_string());
        match name.as_str() {
            "EvalActionName" => e.action = text(&mut field)?,
            "EvalResourceName" => e.resource = text(&mut field)?,
            "EvalDecision" => e.decision = text(&mut field)?,
            "MissingContextValues" => {
                while let Some(mut key) = field.next_tag() {
                    e.missing_context.push(text(&mut key)?);
                }
            }
            _ => {}
        }
    }
    if e.action.is_empty() || e.decision.is_empty() {
        return Err("an evaluation result without EvalActionName or EvalDecision".into());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_including_nested_members() {
        let xml = r#"<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <SimulatePrincipalPolicyResult>
    <IsTruncated>true</IsTruncated>
    <Marker>next&amp;page</Marker>
    <EvaluationResults>
      <member>
        <EvalActionName>ssm:GetParameters</EvalActionName>
        <EvalResourceName>arn:aws:ssm:us-east-1:111111111111:parameter/a&amp;b</EvalResourceName>
        <EvalDecision>allowed</EvalDecision>
        <MatchedStatements><member><SourcePolicyId>p</SourcePolicyId></member></MatchedStatements>
        <MissingContextValues/>
      </member>
      <member>
        <EvalActionName>kms:Decrypt</EvalActionName>
        <EvalDecision>implicitDeny</EvalDecision>
        <MissingContextValues><member>aws:SourceVpce</member></MissingContextValues>
      </member>
    </EvaluationResults>
  </SimulatePrincipalPolicyResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</SimulatePrincipalPolicyResponse>"#;
        let page = parse(xml).unwrap();
        assert!(page.truncated);
        assert_eq!(page.marker.as_deref(), Some("next&page"));
        assert_eq!(
            page.results,
            [
                Evaluation {
                    action: "ssm:GetParameters".into(),
                    resource: "arn:aws:ssm:us-east-1:111111111111:parameter/a&b".into(),
                    decision: "allowed".into(),
                    missing_context: vec![],
                },
                Evaluation {
                    action: "kms:Decrypt".into(),
                    resource: "*".into(),
                    decision: "implicitDeny".into(),
                    missing_context: vec!["aws:SourceVpce".into()],
                },
            ]
        );
        assert!(page.results[0].allowed() && !page.results[1].allowed());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("not xml").is_err() || parse("not xml").unwrap().results.is_empty());
        assert!(parse("<R><SimulatePrincipalPolicyResult><EvaluationResults><member/></EvaluationResults></SimulatePrincipalPolicyResult></R>").is_err());
    }
}
