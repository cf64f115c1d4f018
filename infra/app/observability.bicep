// What an operator watches: a workbook with the mail flow and each mailbox's health at a glance,
// and alerts for what needs a person: poisoned replies, a drain failing run after run, auth
// failures, and a mailbox gone silent (no run drained it for 15 minutes, or none ran at all).
// The queries read the structured lines inboxq logs and its custom metrics (docs/operations.md);
// the metric queries live in .kql files beside this one, checked against the names the code emits.

param applicationInsightsName string
param location string = resourceGroup().location
param tags object = {}
param workbookName string = 'inboxq'

@description('Where alert notifications go; empty creates the alert rules without notifications')
param actionGroupId string = ''

@description('The mailboxes\' keys (INBOXQ_MAILBOXES), or [\'default\'] for one mailbox: the silence alert expects a heartbeat from each')
param mailboxKeys array = [
  'default'
]

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var runs = 'traces | where message startswith "Drain run" | extend p = parse_json(extract(@"(\\{.*\\})$", 1, message))'

var silenceQuery = replace(loadTextContent('silence.kql'), '__MAILBOX_KEYS__', string(mailboxKeys))

var alerts = [
  {
    name: 'inboxq-mailbox-silent'
    description: 'No drain run drained a mailbox for 15 minutes, or none ran at all (the schedule stopped, the app is down, or a setting keeps runs from starting): its mail waits. Run `inboxq status`.'
    severity: 1
    query: silenceQuery
    threshold: 0
    window: 'PT15M'
  }
  {
    name: 'inboxq-poisoned-replies'
    description: 'A reply could not be delivered after its retries and is in replies-poison: its task is marked failed.'
    severity: 2
    query: 'traces | where message startswith "A reply could not be delivered" or message has "moves it to the replies-poison queue"'
    threshold: 0
    window: 'PT15M'
  }
  {
    name: 'inboxq-drain-failing'
    description: 'Three or more drain runs of a mailbox failed in the last 30 minutes and none succeeded: its mail is waiting in the inbox.'
    severity: 1
    // Per mailbox: with several, one that fails while the others drain must still raise the alert.
    query: '${runs} | summarize failed = countif(p.outcome == "failed"), ok = countif(p.outcome != "failed") by mailbox = tostring(p.mailbox) | where failed >= 3 and ok == 0'
    threshold: 0
    window: 'PT30M'
  }
  {
    name: 'inboxq-sending-paused'
    description: 'Exchange stopped a mailbox from sending (550 5.2.25x throttling, the daily recipient quota, or a full mailbox): its replies wait on the queue. Run `inboxq status`; free the mailbox if it is full.'
    severity: 2
    query: 'customMetrics | where name == "inboxq.reply" and tostring(customDimensions.outcome) == "throttled" and valueSum > 0'
    threshold: 0
    window: 'PT15M'
  }
  {
    name: 'inboxq-auth-failures'
    description: 'Entra ID, IMAP or SMTP refused inboxq\'s credentials: run `inboxq doctor`.'
    severity: 1
    query: 'traces | where message has_any ("AADSTS", "AUTHENTICATE XOAUTH2 failed", "SMTP login to", "SMTP AUTH is disabled", "not connected")'
    threshold: 0
    window: 'PT15M'
  }
]

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
            threshold: alert.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: empty(actionGroupId) ? [] : [
          actionGroupId
        ]
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
