/** JSON Schemas of the contract, generated from the zod schemas, for workers in other languages. */
import { z } from 'zod';

import { replyMessageSchema, taskMessageSchema } from './messages';

export function contractJsonSchemas(): Record<string, unknown> {
  return {
    'task.v1.schema.json': {
      $id: 'urn:inboxq:schema:task:v1',
      title: 'inboxq task message, version 1',
      ...z.toJSONSchema(taskMessageSchema, { io: 'output' }),
    },
    'reply.v1.schema.json': {
      $id: 'urn:inboxq:schema:reply:v1',
      title: 'inboxq reply message, version 1',
      ...z.toJSONSchema(replyMessageSchema, { io: 'input' }),
    },
  };
}
