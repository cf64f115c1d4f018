/**
 * What `azd up` depends on, checked on the template as Azure would evaluate it: the Bicep is
 * compiled (`bicep build`) and, for each scenario below, evaluated with its parameters by the Bicep
 * CLI's deployment snapshot (`bicep snapshot`, the resources a deployment would create, with their
 * properties), then each check reads the result. One check per way a deployment went wrong before
 * (issue 15); each names what it expects and what it found.
 *
 *   node build/scripts/deploy-check.js <bicep CLI> [--root <repository>]
 *
 * scripts/bicep-check.sh runs it in CI, after compiling and linting the Bicep.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { parse as parseYaml } from 'yaml';

import { METRIC_NAMES } from '../shared/telemetry/metrics';

export interface Resource {
  type: string;
  name: string;
  properties?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface Snapshot {
  resources: Resource[];
  outputs: Record<string, unknown>;
}

export interface Evaluation {
  /** The compiled ARM template (`bicep build`). */
  template: { parameters: Record<string, { allowedValues?: unknown[]; metadata?: Record<string, unknown> }> };
  /** The template evaluated with a scenario's parameters; throws when the template can't take them. */
  snapshot(scenario: Partial<Scenario>): Snapshot;
  /** A file of the repository (azure.yaml, main.parameters.json, a script). */
  file(relative: string): string;
}

export type Scenario = Record<string, string | boolean | number>;

export const DEPLOYMENT = {
  subscription: '11111111-1111-4111-8111-111111111111',
  tenant: '22222222-2222-4222-8222-222222222222',
  otherTenant: '33333333-3333-4333-8333-333333333333',
  deployer: '44444444-4444-4444-8444-444444444444',
  location: 'swedencentral',
};

const BASE: Scenario = {
  environmentName: 'ci',
  location: DEPLOYMENT.location,
  principalId: DEPLOYMENT.deployer,
  clientId: '55555555-5555-4555-8555-555555555555',
  authorizedSenders: '*@contoso.com',
  mailbox: 'agent@contoso.com',
};

const ROLES = {
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6',
  secretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7',
  certificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985',
};

const of = (snapshot: Snapshot, type: string) => snapshot.resources.filter((r) => r.type === type);
const props = (r: Resource | undefined): Record<string, unknown> => r?.properties ?? {};
const roleAssignments = (snapshot: Snapshot) =>
  of(snapshot, 'Microsoft.Authorization/roleAssignments').map((r) => {
    const p = props(r);
    return {
      principalId: String(p['principalId']),
      principalType: String(p['principalType']),
      role: String(p['roleDefinitionId']).split('/').pop()!,
    };
  });
const deployerRoles = (snapshot: Snapshot) =>
  roleAssignments(snapshot)
    .filter((a) => a.principalId === DEPLOYMENT.deployer)
    .map((a) => a.role)
    .sort();
interface AzureYaml {
  services?: Record<string, { dist?: string; hooks?: Record<string, { run?: string }> }>;
  hooks?: Record<string, { run?: string }>;
}
const azureYaml = (e: Evaluation) => parseYaml(e.file('azure.yaml')) as AzureYaml;
const parameterMapping = (e: Evaluation) =>
  (JSON.parse(e.file('infra/main.parameters.json')) as { parameters: Record<string, { value: unknown }> }).parameters;

export interface Check {
  /** The defect of issue 15 it guards against. */
  defect: string;
  /** Problems found; empty when the check passes. */
  run(e: Evaluation): string[];
}

export const CHECKS: Check[] = [
  {
    defect: '1. a provision after `azd down` meets the soft-deleted vault of the same name',
    run(e) {
      const problems: string[] = [];
      const vault = (suffix: string) => of(e.snapshot({ vaultSuffix: suffix }), 'Microsoft.KeyVault/vaults')[0];
      const first = attempt(problems, () => vault('a1b2c3'));
      if (first) {
        if (first.name !== vault('a1b2c3')?.name) problems.push('the vault name changes between provisions');
        if (first.name === vault('d4e5f6')?.name)
          problems.push(
            `the vault name ${first.name} does not change with vaultSuffix: a redeployment meets the deleted vault`,
          );
        if (first.name.length > 24) problems.push(`the vault name ${first.name} is longer than 24 characters`);
        if (props(first)['softDeleteRetentionInDays'] !== 90)
          problems.push(
            `a new vault keeps deleted secrets ${String(props(first)['softDeleteRetentionInDays'])} days, not 90`,
          );
      }
      if (!/"\$\{INBOXQ_VAULT_SUFFIX=?\}"/.test(JSON.stringify(parameterMapping(e)['vaultSuffix']?.value ?? '')))
        problems.push('main.parameters.json does not fill vaultSuffix from INBOXQ_VAULT_SUFFIX');
      const hooks = azureYaml(e).hooks ?? {};
      for (const hook of ['preprovision', 'postdown'])
        if (hooks[hook]?.run !== `./scripts/azd-hooks.sh ${hook}`)
          problems.push(`azure.yaml has no ${hook} hook running scripts/azd-hooks.sh`);
      return problems;
    },
  },
  {
    defect: "2. the deployer's role assignment hard-codes principalType 'User' (a pipeline's service principal fails)",
    run(e) {
      const problems: string[] = [];
      for (const principalType of ['ServicePrincipal', 'User']) {
        const snapshot = attempt(problems, () => e.snapshot({ principalType, clientCredential: 'secret' }));
        if (!snapshot) break;
        const found = roleAssignments(snapshot).filter((a) => a.principalId === DEPLOYMENT.deployer);
        if (found.length === 0) problems.push(`no role assignment for the deployer in secret mode (${principalType})`);
        for (const a of found)
          if (a.principalType !== principalType)
            problems.push(`the deployer's ${a.role} assignment says ${a.principalType}, not ${principalType}`);
      }
      if (parameterMapping(e)['principalType']?.value !== '${AZURE_PRINCIPAL_TYPE=User}')
        problems.push('main.parameters.json does not fill principalType from AZURE_PRINCIPAL_TYPE');
      return problems;
    },
  },
  {
    defect: '3. a region without Flex Consumption fails only at plan creation',
    run(e) {
      const problems: string[] = [];
      const location = e.template.parameters['location'];
      const allowed = (location?.allowedValues ?? []) as string[];
      if (allowed.length === 0) problems.push('the location parameter allows any region');
      if (allowed.some((r) => /euap|stage|canary/.test(r))) problems.push('the region list has a canary region');
      if (allowed.length > 0 && !allowed.includes(DEPLOYMENT.location))
        problems.push(`${DEPLOYMENT.location} is not allowed`);
      if ((location?.metadata?.['azd'] as { type?: string } | undefined)?.type !== 'location')
        problems.push("the location parameter lacks azd's location metadata (azd then offers every region)");
      if (allowed.length > 0) {
        try {
          e.snapshot({ location: 'westindia' });
          problems.push('a deployment to westindia (no Flex Consumption) is accepted');
        } catch {
          // Refused before anything is created: what the list is for.
        }
      }
      return problems;
    },
  },
  {
    defect: '4. certificate mode: the deployer lacks the role to import or create the certificate',
    run(e) {
      const problems: string[] = [];
      const expect = (clientCredential: string, extra: Partial<Scenario>, roles: string[], what: string) => {
        const got = attempt(problems, () => deployerRoles(e.snapshot({ clientCredential, ...extra })));
        if (got && JSON.stringify(got) !== JSON.stringify([...roles].sort()))
          problems.push(`${what}: the deployer gets [${got.join(', ')}], expected [${roles.join(', ')}]`);
      };
      expect('certificate', {}, [ROLES.certificatesOfficer], 'certificate mode');
      expect('secret', {}, [ROLES.secretsOfficer], 'secret mode');
      expect('managed-identity', {}, [], 'managed-identity mode (nothing to put in the vault)');
      expect(
        'managed-identity',
        {
          mailboxes: 'sales',
          appSettings: 'INBOXQ_SALES__MAILBOX=s@contoso.com;INBOXQ_SALES__CLIENT_CREDENTIAL=certificate',
        },
        [ROLES.certificatesOfficer],
        'a mailbox of its own in certificate mode',
      );
      for (const mode of ['certificate', 'secret']) {
        const app = roleAssignments(e.snapshot({ clientCredential: mode })).filter(
          (a) => a.principalId !== DEPLOYMENT.deployer && a.role === ROLES.secretsUser,
        );
        if (app.length !== 1) problems.push(`${mode} mode: the app can't read its credential (Key Vault Secrets User)`);
      }
      return problems;
    },
  },
  {
    defect: '5. per-mailbox settings vanish at the next provision (extraSettings fixed to {})',
    run(e) {
      const problems: string[] = [];
      const mapped = JSON.stringify(parameterMapping(e)['appSettings']?.value ?? null);
      if (!/\$\{INBOXQ_APP_SETTINGS=?\}/.test(mapped))
        problems.push('main.parameters.json does not fill appSettings from the azd environment (INBOXQ_APP_SETTINGS)');
      const constant = Object.entries(parameterMapping(e)).filter(([, p]) => typeof p.value !== 'string');
      if (constant.length > 0)
        problems.push(
          `main.parameters.json fixes ${constant.map(([n]) => n).join(', ')} instead of reading azd's environment`,
        );
      const snapshot = attempt(problems, () =>
        e.snapshot({
          mailbox: '',
          mailboxes: 'sales,support',
          appSettings:
            'INBOXQ_SALES__MAILBOX=sales@contoso.com;INBOXQ_SUPPORT__MAILBOX=support@contoso.com;INBOXQ_SUPPORT__AUTHORIZED_SENDERS=a@x.com,*@y.com',
        }),
      );
      if (!snapshot) return problems;
      const settings = props(of(snapshot, 'Microsoft.Web/sites/config')[0]);
      const want = {
        INBOXQ_MAILBOXES: 'sales,support',
        INBOXQ_SALES__MAILBOX: 'sales@contoso.com',
        INBOXQ_SUPPORT__MAILBOX: 'support@contoso.com',
        INBOXQ_SUPPORT__AUTHORIZED_SENDERS: 'a@x.com,*@y.com',
      };
      for (const [name, value] of Object.entries(want))
        if (settings[name] !== value)
          problems.push(`the app setting ${name} is ${JSON.stringify(settings[name])}, not ${JSON.stringify(value)}`);
      if ('INBOXQ_MAILBOX' in settings) problems.push('INBOXQ_MAILBOX is written beside INBOXQ_MAILBOXES');
      return problems;
    },
  },
  {
    defect: "6. a mailbox in another tenant: the federated credential's issuer is the mailbox's tenant",
    run(e) {
      const problems: string[] = [];
      const snapshot = e.snapshot({ tenantId: DEPLOYMENT.otherTenant });
      const settings = props(of(snapshot, 'Microsoft.Web/sites/config')[0]);
      if (snapshot.outputs['AZURE_TENANT_ID'] !== DEPLOYMENT.tenant)
        problems.push(
          `the AZURE_TENANT_ID output is ${String(snapshot.outputs['AZURE_TENANT_ID'])}, not the deployment's tenant (it overwrites azd's)`,
        );
      if (snapshot.outputs['INBOXQ_TENANT_ID'] !== DEPLOYMENT.otherTenant)
        problems.push("no INBOXQ_TENANT_ID output with the mailbox's tenant");
      if (settings['INBOXQ_TENANT_ID'] !== DEPLOYMENT.otherTenant)
        problems.push("the app's INBOXQ_TENANT_ID is not the mailbox's tenant");
      const hook = e.file('scripts/postprovision.sh');
      const issuer = /"issuer":"https:\/\/login\.microsoftonline\.com\/\$\{(\w+)\}\/v2\.0"/.exec(hook)?.[1];
      if (issuer !== 'AZURE_TENANT_ID')
        problems.push(`postprovision.sh's issuer reads ${issuer ?? 'nothing'}, not the deployment's tenant`);
      return problems;
    },
  },
  {
    defect: '7. alerts count sampled traces and notify nobody',
    run(e) {
      const problems: string[] = [];
      const rules = of(e.snapshot({}), 'Microsoft.Insights/scheduledQueryRules');
      if (rules.length === 0) problems.push('no alert rules');
      const names = Object.values(METRIC_NAMES) as string[];
      for (const rule of rules) {
        const criteria = props(rule)['criteria'] as { allOf: { query: string }[] };
        const query = criteria.allOf.map((c) => c.query).join('\n');
        if (/\btraces\b/.test(query.replace(/\/\/.*$/gm, ''))) problems.push(`${rule.name} counts traces (sampled)`);
        const metric = /name == "([\w.]+)"/.exec(query)?.[1];
        if (!metric || !names.includes(metric))
          problems.push(`${rule.name} reads no metric inboxq emits (${metric ?? 'none'})`);
      }
      const notified = attempt(problems, () => e.snapshot({ alertEmails: 'ops@contoso.com, oncall@contoso.com' }));
      if (notified) {
        for (const rule of of(notified, 'Microsoft.Insights/scheduledQueryRules')) {
          const groups = (props(rule)['actions'] as { actionGroups?: unknown[] } | undefined)?.actionGroups ?? [];
          if (groups.length === 0) problems.push(`${rule.name} notifies nobody although alert e-mails are set`);
        }
        const group = of(notified, 'Microsoft.Insights/actionGroups')[0];
        const receivers = (props(group)['emailReceivers'] as { emailAddress: string }[] | undefined) ?? [];
        if (receivers.map((r) => r.emailAddress).join(',') !== 'ops@contoso.com,oncall@contoso.com')
          problems.push('no action group e-mailing the addresses given');
      }
      for (const name of ['alertEmails', 'alertActionGroupId'])
        if (!JSON.stringify(parameterMapping(e)[name]?.value ?? null).startsWith('"${'))
          problems.push(`main.parameters.json does not fill ${name} from the azd environment`);
      return problems;
    },
  },
  {
    defect: '8. azd zips the whole folder: devDependencies, sources and test servers (548 MB)',
    run(e) {
      const problems: string[] = [];
      const service = azureYaml(e).services?.['inboxq'];
      if (service?.dist !== 'build/deploy')
        problems.push(`azure.yaml's service deploys ${service?.dist ?? 'the whole folder'}, not build/deploy`);
      if (service?.hooks?.['prepackage']?.run !== 'npm run package')
        problems.push("the service's prepackage hook does not build the package (npm run package)");
      const scripts = (JSON.parse(e.file('package.json')) as { scripts: Record<string, string> }).scripts;
      if (!scripts['package']?.includes('package.js')) problems.push('package.json has no package script');
      return problems;
    },
  },
  {
    defect: '9. no private networking option; mail blobs without soft delete',
    run(e) {
      const problems: string[] = [];
      const open = e.snapshot({});
      const blob = of(open, 'Microsoft.Storage/storageAccounts/blobServices')[0];
      const soft = props(blob)['deleteRetentionPolicy'] as { enabled?: boolean; days?: number } | undefined;
      if (!soft?.enabled || (soft.days ?? 0) < 7)
        problems.push('deleted mail blobs are not kept (blob soft delete off)');
      if (of(open, 'Microsoft.Network/virtualNetworks').length > 0)
        problems.push('a network is made without vnetEnabled');
      let closed: Snapshot;
      try {
        closed = e.snapshot({ vnetEnabled: true });
      } catch (err) {
        return [...problems, `no vnetEnabled parameter: ${(err as Error).message.split('\n')[0]}`];
      }
      const storage = of(closed, 'Microsoft.Storage/storageAccounts')[0];
      const vault = of(closed, 'Microsoft.KeyVault/vaults')[0];
      if (props(storage)['publicNetworkAccess'] !== 'Disabled') problems.push("storage's public endpoint stays open");
      if (props(vault)['publicNetworkAccess'] !== 'Disabled') problems.push("the vault's public endpoint stays open");
      const groups = of(closed, 'Microsoft.Network/privateEndpoints').flatMap((r) =>
        (props(r)['privateLinkServiceConnections'] as { properties: { groupIds: string[] } }[]).flatMap(
          (c) => c.properties.groupIds,
        ),
      );
      for (const group of ['blob', 'queue', 'table', 'vault'])
        if (!groups.includes(group)) problems.push(`no private endpoint for ${group}`);
      if (of(closed, 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups').length < 4)
        problems.push('private endpoints without their DNS zones');
      const subnets = (props(of(closed, 'Microsoft.Network/virtualNetworks')[0])['subnets'] ?? []) as {
        properties: { delegations?: { properties: { serviceName: string } }[]; natGateway?: unknown };
      }[];
      const app = subnets.find((s) =>
        s.properties.delegations?.some((d) => d.properties.serviceName === 'Microsoft.App/environments'),
      );
      if (!app) problems.push('no subnet delegated to Microsoft.App/environments (Flex Consumption)');
      else if (!app.properties.natGateway) problems.push("the app's subnet has no NAT gateway: no way out to Exchange");
      if (!props(of(closed, 'Microsoft.Web/sites')[0])['virtualNetworkSubnetId'])
        problems.push('the app is not integrated in the network');
      if (props(of(open, 'Microsoft.Web/sites')[0])['virtualNetworkSubnetId'])
        problems.push('the app is integrated in a network without vnetEnabled');
      return problems;
    },
  },
  {
    defect: '10. every billed second priced at 2 GB: the instance size fixed, not a parameter',
    run(e) {
      const problems: string[] = [];
      const memory = (snapshot: Snapshot) =>
        (
          (
            props(of(snapshot, 'Microsoft.Web/sites')[0])['functionAppConfig'] as {
              scaleAndConcurrency?: { instanceMemoryMB?: number };
            }
          )?.scaleAndConcurrency ?? {}
        ).instanceMemoryMB;
      const byDefault = memory(e.snapshot({}));
      if (byDefault !== 512) problems.push(`the default instance has ${byDefault} MB, not 512`);
      const larger = attempt(problems, () => memory(e.snapshot({ instanceMemoryMB: 2048 })));
      if (larger !== undefined && larger !== 2048) problems.push(`instanceMemoryMB 2048 gives ${larger} MB`);
      if (
        !JSON.stringify(parameterMapping(e)['instanceMemoryMB']?.value ?? null).startsWith(
          '"${INBOXQ_INSTANCE_MEMORY_MB',
        )
      )
        problems.push('main.parameters.json does not fill instanceMemoryMB from INBOXQ_INSTANCE_MEMORY_MB');
      if (!attemptRefused(() => e.snapshot({ instanceMemoryMB: 1024 })))
        problems.push('instanceMemoryMB 1024 (no such Flex Consumption size) is accepted');
      return problems;
    },
  },
  {
    defect: "11. a mailbox's worker can read, answer or attach what belongs to another mailbox (roles on the account)",
    run(e) {
      const problems: string[] = [];
      const [sales, support] = [WORKERS.sales, WORKERS.support];
      const several = attempt(problems, () =>
        e.snapshot({
          mailboxes: 'sales,support',
          appSettings: 'INBOXQ_SALES__MAILBOX=sales@contoso.com;INBOXQ_SUPPORT__MAILBOX=support@contoso.com',
          workerPrincipals: `sales=${sales},support=${support},hr=${WORKERS.unknown}`,
        }),
      );
      if (several) {
        const resources = new Set(
          several.resources.filter((r) => r.type.startsWith('Microsoft.Storage/')).map((r) => r.name.split('/').pop()),
        );
        for (const name of ['replies-sales', 'replies-sales-poison', 'inboxq-mail-sales', 'inboxqWorkerDonesales'])
          if (!resources.has(name)) problems.push(`two mailboxes: the deployment creates no ${name}`);
        const expected = (key: string) =>
          [
            `queues/tasks-${key} ${WORKER_ROLES.queueProcessor}`,
            `queues/replies-${key} ${WORKER_ROLES.queueSender}`,
            `containers/inboxq-mail-${key} ${WORKER_ROLES.blobContributor}`,
            `tables/inboxqWorkerDone${key} ${WORKER_ROLES.tableContributor}`,
          ].sort();
        for (const [key, principal] of [
          ['sales', sales],
          ['support', support],
        ] as const) {
          const got = scopedRoles(several, principal);
          if (JSON.stringify(got) !== JSON.stringify(expected(key)))
            problems.push(`the ${key} worker gets [${got.join(', ')}], expected [${expected(key).join(', ')}]`);
        }
        if (scopedRoles(several, WORKERS.unknown).length > 0)
          problems.push('a worker of a mailbox the deployment does not have (hr) gets roles');
      }
      const one = attempt(problems, () => e.snapshot({ workerPrincipals: `default=${sales}` }));
      if (one) {
        const got = scopedRoles(one, sales);
        const want = [
          `queues/tasks ${WORKER_ROLES.queueProcessor}`,
          `queues/replies ${WORKER_ROLES.queueSender}`,
          `containers/inboxq-mail ${WORKER_ROLES.blobContributor}`,
          `tables/inboxqWorkerDone ${WORKER_ROLES.tableContributor}`,
        ].sort();
        if (JSON.stringify(got) !== JSON.stringify(want))
          problems.push(`one mailbox: its worker gets [${got.join(', ')}], expected [${want.join(', ')}]`);
      }
      if (!JSON.stringify(parameterMapping(e)['workerPrincipals']?.value ?? null).includes('INBOXQ_WORKER_PRINCIPALS'))
        problems.push('main.parameters.json does not fill workerPrincipals from INBOXQ_WORKER_PRINCIPALS');
      return problems;
    },
  },
];

/** Worker principals of the scenarios: ids nothing else in the template uses. */
const WORKERS = {
  sales: '66666666-6666-4666-8666-666666666666',
  support: '77777777-7777-4777-8777-777777777777',
  unknown: '88888888-8888-4888-8888-888888888888',
};
const WORKER_ROLES = {
  queueProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed',
  queueSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a',
  blobContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe',
  tableContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3',
};

/**
 * A principal's role assignments as `<kind>/<name> <role>`, the scope read from the assignment's
 * id: `.../queueServices/default/queues/tasks-sales/providers/Microsoft.Authorization/...` is
 * `queues/tasks-sales`; an assignment on the whole account (or anything else) keeps its scope's id.
 */
function scopedRoles(snapshot: Snapshot, principalId: string): string[] {
  return of(snapshot, 'Microsoft.Authorization/roleAssignments')
    .filter((r) => String(props(r)['principalId']) === principalId)
    .map((r) => {
      const scope = String(r['id']).split('/providers/Microsoft.Authorization/')[0]!;
      const m = /\/(queues|containers|tables)\/([^/]+)$/.exec(scope);
      return `${m ? `${m[1]}/${m[2]}` : scope} ${String(props(r)['roleDefinitionId']).split('/').pop()}`;
    })
    .sort();
}

/** True when fn throws (a scenario the template refuses). */
function attemptRefused(fn: () => unknown): boolean {
  try {
    fn();
    return false;
  } catch {
    return true;
  }
}

/** fn's result, or undefined with its error among the problems (a scenario the template can't take). */
function attempt<T>(problems: string[], fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    problems.push((err as Error).message.split('\n')[0]!);
    return undefined;
  }
}

/** bicepparam source for a scenario: only the parameters the template declares. */
export function bicepparam(declared: string[], scenario: Scenario): string {
  const lines = ["using 'main.bicep'"];
  for (const [name, value] of Object.entries(scenario)) {
    if (!declared.includes(name)) throw new Error(`the template has no parameter ${name}`);
    lines.push(`param ${name} = ${typeof value === 'string' ? `'${value.replace(/['\\]/g, '\\$&')}'` : String(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

function evaluation(bicep: string, root: string, work: string): Evaluation {
  const infra = path.join(work, 'infra');
  cpSync(path.join(root, 'infra'), infra, { recursive: true });
  execFileSync(bicep, ['build', path.join(infra, 'main.bicep'), '--outfile', path.join(work, 'main.json')], {
    stdio: 'pipe',
  });
  const template = JSON.parse(readFileSync(path.join(work, 'main.json'), 'utf8')) as Evaluation['template'];
  const declared = Object.keys(template.parameters);
  const cache = new Map<string, Snapshot>();
  let n = 0;
  return {
    template,
    file: (relative) => readFileSync(path.join(root, relative), 'utf8'),
    snapshot(scenario) {
      const full = { ...BASE, ...scenario } as Scenario;
      const key = JSON.stringify(full);
      const hit = cache.get(key);
      if (hit) return hit;
      const file = path.join(infra, `scenario-${n++}.bicepparam`);
      writeFileSync(file, bicepparam(declared, full));
      try {
        execFileSync(
          bicep,
          [
            'snapshot',
            file,
            '--mode',
            'overwrite',
            '--subscription-id',
            DEPLOYMENT.subscription,
            '--tenant-id',
            DEPLOYMENT.tenant,
            '--location',
            DEPLOYMENT.location,
          ],
          { stdio: 'pipe' },
        );
      } catch (err) {
        const out = err as { stdout?: Buffer; stderr?: Buffer };
        throw new Error(
          `bicep snapshot refused ${key}: ${String(out.stdout ?? '')}${String(out.stderr ?? '')}`.trim(),
          {
            cause: err,
          },
        );
      }
      const raw = JSON.parse(readFileSync(file.replace(/\.bicepparam$/, '.snapshot.json'), 'utf8')) as {
        predictedResources: Resource[];
        outputs: Record<string, unknown>;
      };
      const snapshot = { resources: raw.predictedResources, outputs: raw.outputs };
      cache.set(key, snapshot);
      return snapshot;
    },
  };
}

if (require.main === module) {
  const [bicep, flag, rootArg] = process.argv.slice(2);
  if (!bicep || (flag && flag !== '--root')) {
    console.error('usage: deploy-check <bicep CLI> [--root <repository>]');
    process.exit(2);
  }
  const root = path.resolve(rootArg ?? path.join(__dirname, '..', '..'));
  const work = mkdtempSync(path.join(tmpdir(), 'inboxq-deploy-check-'));
  let failed = 0;
  try {
    const e = evaluation(bicep, root, work);
    for (const check of CHECKS) {
      let problems: string[];
      try {
        problems = check.run(e);
      } catch (err) {
        problems = [(err as Error).message.split('\n')[0]!];
      }
      if (problems.length === 0) console.log(`deploy-check: ok    ${check.defect}`);
      else {
        failed++;
        console.log(`deploy-check: FAIL  ${check.defect}`);
        for (const p of problems) console.log(`                    - ${p}`);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  console.log(`deploy-check: ${CHECKS.length - failed} of ${CHECKS.length} checks passed`);
  process.exit(failed === 0 ? 0 : 1);
}
