/**
 * The typed configuration: what the settings of one mailbox become once validated (mailbox.ts),
 * and what every other module of inboxq reads instead of the app settings.
 */

/** Sender policy of one mailbox: who may give work, and how their mail must be authenticated. */
export interface SenderPolicy {
  /** Exact addresses and `*@domain` patterns, lower-cased. Empty admits no one. */
  authorizedSenders: string[];
  /** authserv-id of the first Authentication-Results header; "" means Microsoft 365 (EOP writes none). */
  trustedAuthservId: string;
  /** Accept `X-MS-Exchange-Organization-AuthAs: Internal` when there is no Authentication-Results header. */
  microsoftInternalFallback: boolean;
}

export type ClientCredentialSource =
  | { kind: 'secret-setting'; secret: string }
  | { kind: 'keyvault-secret'; vaultUrl: string; secretName: string }
  /** A certificate in Key Vault (PEM content type), read as its secret: certificate and private key. */
  | { kind: 'keyvault-certificate'; vaultUrl: string; certificateName: string }
  /** Secretless: the Function App's user-assigned managed identity, as a federated credential on the app registration. */
  | { kind: 'managed-identity'; identityClientId: string };

export type StorageConnection =
  | { kind: 'connection-string'; connectionString: string }
  | {
      kind: 'identity';
      queueServiceUri: string;
      tableServiceUri: string;
      blobServiceUri: string;
      /** Client id of a user-assigned managed identity, if any. */
      clientId: string | undefined;
    };

export interface InboxqConfig {
  /** The mailbox's key in INBOXQ_MAILBOXES; `default` when the deployment serves one mailbox. */
  key: string;
  mailbox: string;
  /** The queue its tasks go to: `tasks`, or `tasks-<key>` when the deployment serves several mailboxes. */
  tasksQueue: string;
  /** The queue its replies come from: `replies`, or `replies-<key>` with several mailboxes. */
  repliesQueue: string;
  /** The container of its stored mail and its replies' attachments: `inboxq-mail`, or `inboxq-mail-<key>` with several. */
  mailContainer: string;
  senderPolicy: SenderPolicy;
  identity: {
    tenantId: string;
    clientId: string;
    authorityHost: string;
    /** Resource of Exchange Online; the token scope is `${resource}/.default`. */
    exchangeResource: string;
    credential: ClientCredentialSource;
  };
  keyVault: {
    /** Off Azure (a local vault endpoint) the challenge's resource can't be verified. */
    verifyChallengeResource: boolean;
    /** Look the vault login's authority up in Microsoft's instance discovery (off for a private identity provider). */
    instanceDiscovery: boolean;
  };
  /** keepWarmMs: how long a warm instance keeps an idle session for the next drain (0: a session per drain). */
  imap: { host: string; port: number; secure: boolean; keepWarmMs: number };
  smtp: { host: string; port: number };
  /** Extra CA certificates (PEM) trusted for every TLS peer; for local stacks and TLS-inspecting proxies. */
  tlsCa: Buffer | undefined;
  drain: {
    processedAction: 'move' | 'delete';
    processedFolder: string;
    quarantineFolder: string;
    maxMessagesPerRun: number;
    runBudgetMs: number;
    /** The run lease: held this long, renewed before each batch. */
    leaseMs: number;
    /** Stored mail (blobs) and ledger rows older than this are deleted; 0 keeps them. */
    retentionDays: number;
    /**
     * Mail in the processed and quarantine folders, and inboxq's own copies in Sent, older than this
     * is deleted from the mailbox; 0 keeps it (the mailbox then fills up).
     */
    mailboxRetentionDays: number;
  };
  reply: {
    /** Replies sent per minute at most (Exchange Online: 30 per mailbox); 0 = no pacing. */
    maxPerMinute: number;
    /** Tell the sender when their answer can't be delivered (its reply ended in the poison queue). */
    failureNotice: boolean;
    /** A reply in `sending` belongs to its delivery this long; after it, another delivery checks the Sent folder and takes over. */
    leaseMs: number;
  };
  /** A short threaded answer to the first mail of each conversation, with its task id. */
  acknowledgement: { enabled: boolean; text: string };
  storage: StorageConnection;
}

/** The app settings as the Functions host hands them over (process.env), or a test's own. */
export type Env = Record<string, string | undefined>;

/** Every mailbox of a deployment, validated together. */
export interface Deployment {
  mailboxes: InboxqConfig[];
}
