// What an operator watches: a workbook with the mail flow and each mailbox's health at a glance,
// and alerts for what needs a person: poisoned replies, a drain failing run after run, auth
// failures, and a mailbox gone silent (no run drained it for 15 minutes, or none ran at all).
// The alerts count inboxq's custom metrics (unsampled); the workbook also reads its structured log
// lines (docs/operations.md). The longer queries live in .kql files beside this one, checked
// against the names the code emits.

param applicationInsightsName string
param location string = resourceGroup().location
param tags object = {}
param workbookName string = 'inboxq'

@description('An existing action group the alerts notify (its resource id); empty for none')
param actionGroupId string = ''

@description('Addresses (separated by commas) an action group created here e-mails when an alert fires; empty for none')
param alertEmails string = ''

@description('The mailboxes\' keys (INBOXQ_MAILBOXES), or [\'default\'] for one mailbox: the silence alert expects a heartbeat from each')
param mailboxKeys array = [
  'default'
]

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var runs = 'traces | where message startswith "Drain run" | extend p = parse_json(extract(@"(\\{.*\\})$", 1, message))'

var silenceQuery = replace(loadTextContent('silence.kql'), '__MAILBOX_KEYS__', string(mailboxKeys))

// A metric's increments in the window, per mailbox (custom metrics arrive as deltas, unsampled).
var metricSum = 'customMetrics | extend mailbox = tostring(customDimensions["mailbox"]), outcome = tostring(customDimensions["outcome"]), stage = tostring(customDimensions["stage"])'

// Every alert counts inboxq's own custom metrics, never `traces`: host.json samples traces, and a
// sampled-out log line would be an alert that never fires. The metric names are the ones
// shared/telemetry/metrics.ts emits (test/unit/infra.test.ts holds them together).
var alerts = [
  {
    name: 'inboxq-mailbox-silent'
    description: 'No drain run drained a mailbox for 15 minutes, or none ran at all (the schedule stopped, the app is down, or a setting keeps runs from starting): its mail waits. Run `inboxq status`.'
    severity: 1
    query: silenceQuery
    window: 'PT15M'
  }
  {
    name: 'inboxq-poisoned-replies'
    description: 'A reply could not be delivered after its retries and was set aside (replies-poison): its task is marked failed. Run `inboxq trace <task id>`, fix the cause, then `inboxq replay replies-poison`.'
    severity: 2
    query: '${metricSum} | where name == "inboxq.reply" and outcome == "failed" and valueSum > 0 | summarize failed = sum(valueSum) by mailbox'
    window: 'PT15M'
  }
  {
    name: 'inboxq-drain-failing'
    description: 'Three or more drain runs of a mailbox failed in the last 30 minutes and none drained: its mail is waiting in the inbox. Run `inboxq doctor --mailbox <key>`.'
    severity: 1
    // Per mailbox: with several, one that fails while the others drain must still raise the alert.
    query: '${metricSum} | where name == "inboxq.drain.runs" | summarize failed = sumif(valueSum, outcome == "failed"), drained = sumif(valueSum, outcome in ("ok", "partial")) by mailbox | where failed >= 3 and drained == 0'
    window: 'PT30M'
  }
  {
    name: 'inboxq-sending-paused'
    description: 'Exchange stopped a mailbox from sending (550 5.2.25x throttling, the daily recipient quota, or a full mailbox): its replies wait on the queue. Run `inboxq status`; free the mailbox if it is full.'
    severity: 2
    query: '${metricSum} | where name == "inboxq.reply" and outcome == "throttled" and valueSum > 0 | summarize paused = sum(valueSum) by mailbox'
    window: 'PT15M'
  }
  {
    name: 'inboxq-auth-failures'
    description: 'Entra ID, IMAP or SMTP refused a mailbox\'s credential (stage token, imap or smtp): run `inboxq doctor --mailbox <key>`.'
    severity: 1
    query: '${metricSum} | where name == "inboxq.auth.failures" and valueSum > 0 | summarize refused = sum(valueSum) by mailbox, stage'
    window: 'PT15M'
  }
]

// Where the alerts go: an action group made here for the given addresses, and/or an existing one.
var emails = filter(map(split(alertEmails, ','), address => trim(address)), address => !empty(address))

resource emailGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(emails)) {
  name: 'ag-inboxq'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'inboxq'
    enabled: true
    emailReceivers: [
      for (address, i) in emails: {
        name: 'email-${i}'
        emailAddress: address
        useCommonAlertSchema: true
      }
    ]
  }
}

var actionGroups = concat(empty(actionGroupId) ? [] : [actionGroupId], empty(emails) ? [] : [emailGroup.id])

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for alert in alerts: {
    name: alert.name
    location: location
    tags: tags
    properties: {
      displayName: alert.name
      description: alert.description
      severity: alert.severity
      enabled: true
      scopes: [
        appInsights.id
      ]
      evaluationFrequency: 'PT5M'
      windowSize: alert.window
      criteria: {
        allOf: [
          {
            query: alert.query
            timeAggregation: 'Count'
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: actionGroups
      }
    }
  }
]

var workbookQueries = [
  {
    title: 'Mailboxes: last run that drained, backlog, arrival to task'
    query: loadTextContent('mailboxes.kql')
  }
  {
    title: 'Mail per run: queued, rejected, quarantined'
    query: '${runs} | extend mailbox = tostring(p.mailbox) | summarize queued = sum(toint(p.queued)), rejected = sum(toint(p.rejected)), quarantined = sum(toint(p.quarantined)) by bin(timestamp, 1h), mailbox | render timechart'
  }
  {
    title: 'Why mail was rejected'
    query: 'traces | where message startswith "Mail rejected: " | extend reason = extract(@"^Mail rejected: ([^{]*)", 1, message) | summarize count() by reason | order by count_ desc'
  }
  {
    title: 'Replies sent, deferred, failed'
    query: 'traces | where message startswith "Reply sent" or message has "reply deferred by" or message startswith "Reply failed" or message startswith "A reply could not be delivered" | extend kind = case(message startswith "Reply sent", "sent", message has "reply deferred by", "deferred", message startswith "Reply failed", "retried", "failed") | summarize count() by bin(timestamp, 1h), kind | render columnchart'
  }
  {
    title: 'Drain runs: outcome and duration'
    query: '${runs} | project timestamp, mailbox = tostring(p.mailbox), outcome = tostring(p.outcome), seen = toint(p.seen), durationMs = toint(p.durationMs), stoppedBecause = tostring(p.stoppedBecause) | order by timestamp desc | take 50'
  }
  {
    title: 'Errors'
    query: 'traces | where severityLevel >= 3 | project timestamp, message | order by timestamp desc | take 50'
  }
]

var workbookItems = [
  for (q, i) in workbookQueries: {
    type: 3
    name: 'query-${i}'
    content: {
      version: 'KqlItem/1.0'
      title: q.title
      query: q.query
      size: 0
      timeContext: {
        durationMs: 86400000
      }
      queryType: 0
      resourceType: 'microsoft.insights/components'
    }
  }
]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, workbookName)
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'inboxq: mail flow'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string({
      version: 'Notebook/1.0'
      items: workbookItems
      isLocked: false
    })
  }
}
